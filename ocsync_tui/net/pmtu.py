"""Datagram packetization layer PMTU discovery (RFC 8899, simplified) for one peer.

Sizes are UDP payload sizes. Every path is assumed to carry BASE_PLPMTU (1200, as QUIC assumes); the
owner passes the local maximum (the interface MTU less IP/UDP headers, 65507 on loopback) and the
secure channel's per-datagram overhead. The search probes the local maximum first (loopback and
jumbo-frame LANs carry it at once), then bisects between the largest confirmed and the smallest
failed size until they meet. A probe is a PmtuProbe frame padded to the size, confirmed only by the
peer's PmtuProbeAck; MAX_PROBES unanswered probes of a size mean the path does not carry it. Probe
loss is not congestion, so probes bypass the transfer's congestion control.

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
        self._probe_size = 0
        self._probe_deadline: float | None = None
        self._failures = 0
        self._next_probe_at: float | None = now
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
        self._next_probe_at = now
        self._next_size = self.local_max if self.local_max > self._search_low else None
        if self._next_size is None:
            self._finish_search(now)

    def _finish_search(self, now: float) -> None:
        self._phase = _Phase.COMPLETE
        self._next_size = None
        # The base size is assumed, not probed: there is nothing smaller to fall back to.
        self._next_probe_at = now + self.validate_interval if self.max_datagram_size > BASE_PLPMTU else None

    def _set_size(self, size: int) -> None:
        if size != self.max_datagram_size:
            self.max_datagram_size = size
            self._events.append(events.PathMtuChanged(self.public_key, size))

    def note_black_hole(self, now: float) -> None:
        """Full-sized datagrams stopped arriving: fall back to the base size and search again."""
        self._probe_deadline = None
        self._failures = 0
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
            if self._probe_deadline is None or (frame.probe_id, frame.size) != (self._probe_id, self._probe_size):
                return
            self._probe_deadline = None
            self._failures = 0
            self._on_size_confirmed(frame.size, now)

    def _on_size_confirmed(self, size: int, now: float) -> None:
        if self._phase is _Phase.COMPLETE:
            self._finish_search(now)
            return
        self._set_size(size)
        self._search_low = size
        self._next_search_size(now)

    def _on_size_failed(self, size: int, now: float) -> None:
        if self._phase is _Phase.COMPLETE:
            self.note_black_hole(now)
            return
        self._search_high = size
        self._next_search_size(now)

    def _next_search_size(self, now: float) -> None:
        if self._search_high - self._search_low <= 1:
            self._finish_search(now)
            return
        self._next_size = (self._search_low + self._search_high) // 2
        self._next_probe_at = now

    def frames_to_send(self, now: float) -> list[bytes]:
        self.handle_timer(now)
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        candidates = [self._probe_deadline, self._next_probe_at]
        if self._phase is _Phase.COMPLETE:
            candidates.append(self._search_restart_at)
        return min((time for time in candidates if time is not None), default=None)

    def handle_timer(self, now: float) -> None:
        if self._probe_deadline is not None and now >= self._probe_deadline:
            self._probe_deadline = None
            self._failures += 1
            if self._failures >= MAX_PROBES:
                self._failures = 0
                self._on_size_failed(self._probe_size, now)
            else:
                self._next_probe_at = now
        if self._phase is _Phase.COMPLETE and now >= self._search_restart_at and self._probe_deadline is None:
            self._start_search(now)
        if self._probe_deadline is None and self._next_probe_at is not None and now >= self._next_probe_at:
            self._send_probe(now)

    def _send_probe(self, now: float) -> None:
        size = self._next_size if self._phase is _Phase.SEARCHING else self.max_datagram_size
        self._probe_id += 1
        self._probe_size = size
        self._probe_deadline = now + self.probe_timeout
        self._next_probe_at = None
        self._outbox.append(frames.encode_pmtu_probe(self._probe_id, size - self.overhead))

    def next_event(self) -> Any:
        return self._events.popleft() if self._events else None
