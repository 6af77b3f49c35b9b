"""Everything this device runs for one peer over its secure session, sans-I/O: the glue between the
secure channel (one per device) and the per-peer cores.

Payloads the channel decrypts from the peer are frames (frames.py). The link hands each to the core
it belongs to, by its type byte: transfers (`TransferManager`) take the rest.
Going out, the link asks the cores for frames no larger than the path allows (the datagram size
minus the channel's `TRANSPORT_OVERHEAD`) and seals each through `SecureChannel.seal`, so the driver
gets ready-to-send datagrams. With no usable session it pulls nothing: the cores' frames wait, and a
handshake is started instead, so nothing is lost before the session exists.

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
from ocsync_tui.net.partial_store import PartialStore
from ocsync_tui.net.secure_channel import TRANSPORT_OVERHEAD, SecureChannel
from ocsync_tui.net.transfer import DEFAULT_RECEIVE_BUFFER, TransferManager
from ocsync_tui.net.udp_socket import Address

# What every IPv4 and IPv6 path carries (QUIC's minimum): the size before any probing.
BASE_DATAGRAM_SIZE = 1200


@dataclass(frozen=True)
class PeerLinkSettings:
    receive_buffer: int = DEFAULT_RECEIVE_BUFFER
    # The datagram size used until path MTU probing confirms a larger one.
    datagram_size: int = BASE_DATAGRAM_SIZE


class PeerLink:
    def __init__(self, public_key: bytes, state_dir: Path, settings: PeerLinkSettings, now: float) -> None:
        self.public_key = public_key
        self.settings = settings
        self.transfers = TransferManager(
            public_key,
            PartialStore(state_dir),
            receive_buffer=settings.receive_buffer,
            max_datagram_size=settings.datagram_size,
        )
        self.datagram_size = settings.datagram_size
        self.endpoint: Address | None = None
        self._session_up = False
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

    def on_session_established(self, endpoint: Address, now: float) -> None:
        self._session_up = True
        self.endpoint = endpoint

    def on_session_lost(self, now: float) -> None:
        self._session_up = False

    def on_path_changed(self, endpoint: Address, now: float) -> None:
        self.endpoint = endpoint

    # --- the sans-I/O interface -------------------------------------------------------------------

    def receive_payload(self, payload: bytes, now: float) -> None:
        self._session_up = True
        self.transfers.receive_frame(payload, now)

    def datagrams_to_send(self, channel: SecureChannel, now: float) -> list[tuple[bytes, Address]]:
        public_key = self.public_key
        if not channel.has_session(public_key, now):
            self._session_up = False
            if self.transfers.get_timer() is not None:
                # Work is waiting: (re)start the handshake; the channel retries and paces attempts itself.
                channel.connect(public_key, now)
            return []
        self._session_up = True
        frame_size = self.datagram_size - TRANSPORT_OVERHEAD
        seal = channel.seal
        datagrams = []
        for frame in self.transfers.frames_to_send(now, frame_size):
            sealed = seal(public_key, frame, now)
            if sealed is None:
                # The session ended between the check and now; the transfer core resends what was lost.
                break
            datagrams.append(sealed)
        return datagrams

    def get_timer(self) -> float | None:
        # Without a session the cores' send timers would fire with nothing able to go: wait for it.
        if not self._session_up:
            return None
        return self.transfers.get_timer()

    def handle_timer(self, now: float) -> None:
        self.transfers.handle_timer(now)

    def next_event(self) -> Any:
        if self._events:
            return self._events.popleft()
        return self.transfers.next_event()
