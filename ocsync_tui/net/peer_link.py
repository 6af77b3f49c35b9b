"""Everything this device runs for one peer over its secure session, sans-I/O: the glue between the
secure channel (one per device) and the per-peer cores.

Payloads the channel decrypts from the peer are frames (frames.py). The link hands each to the core
it belongs to, by its type byte: Ping/Pong to liveness (`KeepaliveCore`), PmtuProbe/PmtuProbeAck to
path MTU discovery (`PathMtuProber`), the rest to transfers (`TransferManager`); any authenticated
frame is a sign of life. Going out, it collects the cores' frames — transfer frames no larger than the
confirmed path MTU minus the channel's `TRANSPORT_OVERHEAD` — and seals each through
`SecureChannel.seal`, so the driver gets ready-to-send datagrams.

Without a usable session the link pulls no transfer frames (they wait; nothing is lost before the
session exists) and starts a handshake when anything is waiting. Keepalives keep going every
`keepalive_interval` whatever happens, so an idle peer's NAT mapping stays open and a dead one is
noticed (PeerDown) and retried.

Path MTU: probing starts when a session is established, from the local route's limit (capped by
`max_datagram_size`) down, and again when the peer's address changes. The transfer core's congestion
controller counts windows in datagrams of the size it is told, so the link tells it each new size.
When the transfer core's probe timeouts suggest datagrams above the base size vanish on the path, the
link tells the prober (`note_black_hole`), which falls back to BASE_PLPMTU and searches again.

Driven like every core: `receive_payload(payload, now)`, `datagrams_to_send(channel, now)`,
`get_timer()` / `handle_timer(now)`, `next_event()`; plus the driver's notices about the session
(`on_session_established`, `on_session_lost`, `on_path_changed`) and the transfer commands.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocsync_tui.net.blob_source import BlobSource
from ocsync_tui.net.events import PathMtuChanged
from ocsync_tui.net.frames import FrameType
from ocsync_tui.net.keepalive import DEFAULT_INTERVAL, DEFAULT_MISSES_ALLOWED, KeepaliveCore
from ocsync_tui.net.partial_store import PartialStore
from ocsync_tui.net.pmtu import BASE_PLPMTU, PathMtuProber
from ocsync_tui.net.secure_channel import TRANSPORT_OVERHEAD, SecureChannel
from ocsync_tui.net.transfer import DEFAULT_RECEIVE_BUFFER, TransferManager
from ocsync_tui.net.udp_socket import Address

_LIVENESS_FRAMES = frozenset((FrameType.PING, FrameType.PONG))
_PMTU_FRAMES = frozenset((FrameType.PMTU_PROBE, FrameType.PMTU_PROBE_ACK))
# Keepalive frames kept while there is no session; more would only say the same thing again.
_HELD_FRAMES_LIMIT = 4


@dataclass(frozen=True)
class PeerLinkSettings:
    receive_buffer: int = DEFAULT_RECEIVE_BUFFER
    # Probing goes no higher: past ~16 KB, bigger datagrams barely cut per-datagram work, while every
    # loss costs more to repeat.
    max_datagram_size: int = 16384
    keepalive_interval: float = DEFAULT_INTERVAL
    keepalive_misses: int = DEFAULT_MISSES_ALLOWED


class PeerLink:
    def __init__(self, public_key: bytes, state_dir: Path, settings: PeerLinkSettings, now: float) -> None:
        self.public_key = public_key
        self.settings = settings
        self.transfers = TransferManager(
            public_key, PartialStore(state_dir), receive_buffer=settings.receive_buffer, max_datagram_size=BASE_PLPMTU
        )
        self.keepalive = KeepaliveCore(
            public_key, now, interval=settings.keepalive_interval, misses_allowed=settings.keepalive_misses
        )
        self.pmtu: PathMtuProber | None = None
        self.endpoint: Address | None = None
        self._session_up = False
        self._held: deque[bytes] = deque(maxlen=_HELD_FRAMES_LIMIT)
        self._events: deque[Any] = deque()

    # --- transfer commands ----------------------------------------------------------------------

    def offer(self, source: BlobSource, now: float) -> int:
        return self.transfers.offer(source, now)

    def accept(self, transfer_id: int, now: float) -> None:
        self.transfers.accept(transfer_id, now)

    def decline(self, transfer_id: int, reason: str, now: float) -> None:
        self.transfers.decline(transfer_id, reason, now)

    def cancel(self, transfer_id: int, now: float) -> bool:
        return self.transfers.cancel(transfer_id, now)

    def close(self) -> None:
        """Record received data durably and close files (before the driver exits)."""
        self.transfers.close()

    # --- session notices from the driver ----------------------------------------------------------

    def on_session_established(self, endpoint: Address, route_max: int, now: float) -> None:
        """`route_max`: the largest datagram the local route towards `endpoint` carries (the driver
        asks the kernel: udp_socket.max_payload_towards)."""
        self._session_up = True
        self._start_path_probing(endpoint, route_max, now)

    def on_session_lost(self, now: float) -> None:
        self._session_up = False

    def on_path_changed(self, endpoint: Address, route_max: int, now: float) -> None:
        self._start_path_probing(endpoint, route_max, now)

    def _start_path_probing(self, endpoint: Address, route_max: int, now: float) -> None:
        if endpoint == self.endpoint and self.pmtu is not None:
            return
        self.endpoint = endpoint
        local_max = min(route_max, self.settings.max_datagram_size)
        if local_max < BASE_PLPMTU:
            self.pmtu = None
            return
        previous = self.pmtu.max_datagram_size if self.pmtu is not None else BASE_PLPMTU
        self.pmtu = PathMtuProber(self.public_key, now, local_max=local_max, overhead=TRANSPORT_OVERHEAD)
        if previous != BASE_PLPMTU:
            # A new path starts from the size every path carries until probing says more.
            self._use_datagram_size(BASE_PLPMTU)
            self._events.append(PathMtuChanged(self.public_key, BASE_PLPMTU))

    def _use_datagram_size(self, size: int) -> None:
        self.transfers.set_datagram_size(size)

    # --- the sans-I/O interface -------------------------------------------------------------------

    def receive_payload(self, payload: bytes, now: float) -> None:
        self._session_up = True
        self.keepalive.note_received(now)
        kind = payload[1] if len(payload) > 1 else -1
        if kind in _LIVENESS_FRAMES:
            self.keepalive.receive_frame(payload, now)
        elif kind in _PMTU_FRAMES:
            if self.pmtu is not None:
                self.pmtu.receive_frame(payload, now)
        else:
            self.transfers.receive_frame(payload, now)

    def datagrams_to_send(self, channel: SecureChannel, now: float) -> list[tuple[bytes, Address]]:
        public_key = self.public_key
        self._held.extend(self.keepalive.frames_to_send(now))
        if not channel.has_session(public_key, now):
            self._session_up = False
            if self._held or self.transfers.get_timer() is not None:
                # Work is waiting: (re)start the handshake; the channel retries and paces attempts itself.
                channel.connect(public_key, now)
            return []
        self._session_up = True
        frames = list(self._held)
        self._held.clear()
        pmtu = self.pmtu
        if pmtu is not None:
            frames.extend(pmtu.frames_to_send(now))
            frame_size = pmtu.max_frame_size
        else:
            frame_size = BASE_PLPMTU - TRANSPORT_OVERHEAD
        frames.extend(self.transfers.frames_to_send(now, frame_size))
        seal = channel.seal
        datagrams = []
        for frame in frames:
            sealed = seal(public_key, frame, now)
            if sealed is None:
                # The session ended between the check and now; the cores resend what matters.
                break
            datagrams.append(sealed)
        self._collect_pmtu_events()
        return datagrams

    def _collect_pmtu_events(self) -> None:
        if self.pmtu is None:
            return
        while (event := self.pmtu.next_event()) is not None:
            self._use_datagram_size(event.max_datagram_size)
            self._events.append(event)

    def get_timer(self) -> float | None:
        timers = [self.keepalive.get_timer()]
        # Without a session the other cores' send timers would fire with nothing able to go.
        if self._session_up:
            timers.append(self.transfers.get_timer())
            if self.pmtu is not None:
                timers.append(self.pmtu.get_timer())
        return min((timer for timer in timers if timer is not None), default=None)

    def handle_timer(self, now: float) -> None:
        self.keepalive.handle_timer(now)
        if self._session_up:
            self.transfers.handle_timer(now)
            black_hole = self.transfers.take_black_hole_suspicion()
            if self.pmtu is not None:
                if black_hole and self.pmtu.max_datagram_size > BASE_PLPMTU:
                    self.pmtu.note_black_hole(now)
                self.pmtu.handle_timer(now)
                self._collect_pmtu_events()

    def next_event(self) -> Any:
        if self._events:
            return self._events.popleft()
        event = self.keepalive.next_event()
        return event if event is not None else self.transfers.next_event()
