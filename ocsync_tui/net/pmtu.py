"""Datagram packetization layer PMTU discovery (RFC 8899, simplified) for one peer.

Sizes are UDP payload sizes. Every path is assumed to carry BASE_PLPMTU (1200, as QUIC assumes); the
owner passes the local maximum (the interface MTU less IP/UDP headers, 65507 on loopback) and the
secure channel's per-datagram overhead. The search starts by probing, side by side, the local maximum
(loopback and jumbo-frame LANs carry it at once) and the sizes common links carry (Ethernet and jumbo
frames, IPv4 and IPv6): the local route can be wider than the path (a forwarder, a tunnel), and
waiting for MAX_PROBES timeouts of each size in turn would keep a whole transfer at the base size.
Then it bisects between the largest confirmed and the smallest failed size until they meet. A probe
is a PmtuProbe frame padded to the size, confirmed only by the peer's PmtuProbeAck; MAX_PROBES
unanswered probes of a size mean the path does not carry it (nor anything larger). Probe loss is not
congestion, so probes bypass the transfer's congestion control.

Black holes: once the search is done, the confirmed size is probed again every `validate_interval`;
if MAX_PROBES of those go unanswered (or the owner calls `note_black_hole`, e.g. on repeated probe
timeouts of full-sized data), the size falls back to BASE_PLPMTU and the search starts over. The
search also restarts every RAISE_INTERVAL to find a path that got better (RFC 8899's
PMTU_RAISE_TIMER). Changes are reported as PathMtuChanged.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

from ocsync_tui.net import events, frames
from ocsync_tui.net.frames import FrameError

BASE_PLPMTU = 1200
MAX_PROBES = 3
DEFAULT_PROBE_TIMEOUT = 1.0
DEFAULT_VALIDATE_INTERVAL = 30.0
RAISE_INTERVAL = 600.0
# UDP payloads of 1500- and 9000-byte IPv4 and IPv6 MTUs.
COMMON_DATAGRAM_SIZES = (8972, 8952, 1472, 1452)


class _Phase(enum.Enum):
    SEARCHING = "searching"
    COMPLETE = "complete"


class PathMtuProber:
    def __init__(
        self,
        public_key: bytes,
        now: float,
        *,
        local_max: int,
        overhead: int,
        probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
        validate_interval: float = DEFAULT_VALIDATE_INTERVAL,
    ) -> None:
        if local_max < BASE_PLPMTU:
            raise ValueError(f"the local maximum datagram size must be at least {BASE_PLPMTU}")
        self.public_key = public_key
        self.local_max = local_max
        self.overhead = overhead
        self.probe_timeout = probe_timeout
        self.validate_interval = validate_interval
        self.max_datagram_size = BASE_PLPMTU
        self._events: deque[Any] = deque()
        self._outbox: list[bytes] = []
        self._probe_id = 0
        # Probes awaiting an ack: probe id → (size, deadline).
        self._in_flight: dict[int, tuple[int, float]] = {}
        # Sizes the search still has to settle → unanswered probes so far.
        self._candidates: dict[int, int] = {}
        # When to probe the confirmed size again (black-hole detection), and how often that went unanswered.
        self._next_probe_at: float | None = None
        self._validation_failures = 0
        self._start_search(now)

    @property
    def max_frame_size(self) -> int:
        """The largest plaintext frame the transfer core may send now."""
        return self.max_datagram_size - self.overhead

    def _start_search(self, now: float) -> None:
        self._phase = _Phase.SEARCHING
        self._search_low = self.max_datagram_size
        self._search_high = self.local_max + 1  # smallest size known not to pass
        self._search_restart_at = now + RAISE_INTERVAL
        self._next_probe_at = None
        self._in_flight.clear()
        sizes = [self.local_max, *(size for size in COMMON_DATAGRAM_SIZES if self._search_low < size < self.local_max)]
        self._candidates = {size: 0 for size in sizes if size > self._search_low}
        if not self._candidates:
            self._finish_search(now)
            return
        for size in self._candidates:
            self._send_probe(size, now)

    def _finish_search(self, now: float) -> None:
        self._phase = _Phase.COMPLETE
        self._candidates.clear()
        self._in_flight.clear()
        # The base size is assumed, not probed: there is nothing smaller to fall back to.
        self._next_probe_at = now + self.validate_interval if self.max_datagram_size > BASE_PLPMTU else None

    def _set_size(self, size: int) -> None:
        if size != self.max_datagram_size:
            self.max_datagram_size = size
            self._events.append(events.PathMtuChanged(self.public_key, size))

    def note_black_hole(self, now: float) -> None:
        """Full-sized datagrams stopped arriving: fall back to the base size and search again."""
        self._set_size(BASE_PLPMTU)
        self._start_search(now)

    def receive_frame(self, data: bytes, now: float) -> None:
        try:
            frame = frames.decode(data)
        except FrameError:
            return
        if isinstance(frame, frames.PmtuProbe):
            self._outbox.append(frames.encode_pmtu_probe_ack(frame.probe_id, frame.size + self.overhead))
        elif isinstance(frame, frames.PmtuProbeAck):
            probe = self._in_flight.get(frame.probe_id)
            if probe is None or probe[0] != frame.size:
                return
            del self._in_flight[frame.probe_id]
            self._on_size_confirmed(frame.size, now)

    def _on_size_confirmed(self, size: int, now: float) -> None:
        if self._phase is _Phase.COMPLETE:
            self._finish_search(now)
            return
        if size > self._search_low:
            self._set_size(size)
            self._search_low = size
        self._settle(lambda candidate: candidate <= size, now)

    def _on_size_failed(self, size: int, now: float) -> None:
        if self._phase is _Phase.COMPLETE:
            self.note_black_hole(now)
            return
        self._search_high = min(self._search_high, size)
        self._settle(lambda candidate: candidate >= size, now)

    def _settle(self, settled, now: float) -> None:
        """Drop the candidates (and their probes) an answer settled; bisect once none is left."""
        for candidate in [candidate for candidate in self._candidates if settled(candidate)]:
            del self._candidates[candidate]
        for probe_id in [probe_id for probe_id, (size, _) in self._in_flight.items() if settled(size)]:
            del self._in_flight[probe_id]
        if self._candidates:
            return
        if self._search_high - self._search_low <= 1:
            self._finish_search(now)
            return
        size = (self._search_low + self._search_high) // 2
        self._candidates[size] = 0
        self._send_probe(size, now)

    def frames_to_send(self, now: float) -> list[bytes]:
        self.handle_timer(now)
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        candidates = [deadline for _, deadline in self._in_flight.values()]
        candidates.append(self._next_probe_at)
        if self._phase is _Phase.COMPLETE:
            candidates.append(self._search_restart_at)
        return min((time for time in candidates if time is not None), default=None)

    def handle_timer(self, now: float) -> None:
        for probe_id, (size, deadline) in list(self._in_flight.items()):
            if now < deadline or probe_id not in self._in_flight:
                continue  # (an earlier answer in this loop may have settled it)
            del self._in_flight[probe_id]
            if self._phase is _Phase.COMPLETE:
                self._validation_failures += 1
                if self._validation_failures >= MAX_PROBES:
                    self.note_black_hole(now)
                else:
                    self._send_probe(size, now)
                continue
            self._candidates[size] += 1
            if self._candidates[size] >= MAX_PROBES:
                self._on_size_failed(size, now)
            else:
                self._send_probe(size, now)
        if self._phase is _Phase.COMPLETE and now >= self._search_restart_at and not self._in_flight:
            self._start_search(now)
        if self._next_probe_at is not None and now >= self._next_probe_at and not self._in_flight:
            self._next_probe_at = None
            self._validation_failures = 0
            self._send_probe(self.max_datagram_size, now)

    def _send_probe(self, size: int, now: float) -> None:
        self._probe_id += 1
        self._in_flight[self._probe_id] = (size, now + self.probe_timeout)
        self._outbox.append(frames.encode_pmtu_probe(self._probe_id, size - self.overhead))

    def next_event(self) -> Any:
        return self._events.popleft() if self._events else None
