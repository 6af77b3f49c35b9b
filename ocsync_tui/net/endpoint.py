"""The trio driver of the transport: one UDP socket carrying handshakes, keepalives and transfers for
every peer of this device.

    endpoint = Endpoint(identity.signing_key, state_dir=home / "transfers", port=0)
    address = await nursery.start(endpoint.run)          # bound and serving
    endpoint.add_peer(their_public_key, ("198.51.100.7", 44996))
    transfer_id = await endpoint.send_blob(their_public_key, bundle_path)
    async for event in endpoint.events: ...               # sessions, transfers, liveness

Inside, the cores are sans-I/O: one `SecureChannel` (handshakes, sessions, encryption) and one
`PeerLink` per peer (transfers, keepalive, path MTU). `run` owns them in a single task so no lock is
needed; command methods (called from other tasks) change the cores and wake that task.

The hot loop: drain what the socket has queued (GRO), open transport packets through the channel's
fast path and hand their frames to the peer's link; fire due timers; collect every datagram the cores
want sent and send them as one batch (GSO); then sleep until the next timer or until the socket is
readable or a command arrives (`wakeup.Waiter`: timers to the microsecond, not epoll's
millisecond). Time for the cores is `trio.current_time()`; the channel gets the
offset to Unix time for its handshake timestamps.

Events go out through a bounded channel (`events`): the secure channel's (SessionEstablished, ...),
the transfer core's and the liveness core's. A consumer that stops reading stalls the endpoint, as
back-pressure should; `event_buffer` sizes the channel.

Create an Endpoint inside a trio run (its cores' clock is trio's).
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import nacl.signing
import trio

from ocsync_tui.net.blob_source import BlobSource, BytesBlobSource, FileBlobSource
from ocsync_tui.net.codec import TRANSPORT
from ocsync_tui.net.events import (
    PeerEndpointChanged,
    SessionEstablished,
    SessionLost,
    TransferCancelled,
    TransferCompleted,
    TransferFailed,
)
from ocsync_tui.net.peer_link import PeerLink, PeerLinkSettings
from ocsync_tui.net.secure_channel import SecureChannel, UnknownPeerError
from ocsync_tui.net.udp_socket import DEFAULT_PORT, Address, UdpSocket, max_payload_towards, open_udp_socket
from ocsync_tui.net.wakeup import Waiter

_TRANSPORT_TYPE_BYTE = bytes((TRANSPORT,))
# Datagrams handled between two send phases: few enough that acknowledgements leave promptly (each
# datagram costs tens of microseconds here), many enough to amortise a loop turn.
_RECEIVE_BATCH = 16
_OUTGOING_ENDINGS = (TransferCompleted, TransferFailed, TransferCancelled)


class Endpoint:
    def __init__(
        self,
        signing_key: nacl.signing.SigningKey,
        *,
        state_dir: Path,
        host: str | None = None,
        port: int = DEFAULT_PORT,
        offload: bool = True,
        event_buffer: int = 1024,
        link_settings: PeerLinkSettings | None = None,
        channel: SecureChannel | None = None,
    ) -> None:
        """`state_dir` holds partial downloads (resumed after a restart); `channel` is for tests that
        need non-default session limits."""
        self._host = host
        self._port = port
        self._offload = offload
        self._state_dir = state_dir
        self._link_settings = link_settings or PeerLinkSettings()
        self._channel = channel or SecureChannel(signing_key, wall_clock_offset=time.time() - trio.current_time())
        self.public_key = self._channel.public_key
        self._links: dict[bytes, PeerLink] = {}
        # Files send_blob opened, closed when their transfer ends.
        self._opened_files: dict[tuple[bytes, int], FileBlobSource] = {}
        self._wake_scope: trio.CancelScope | None = None
        self._woken = False
        self._event_send, self.events = trio.open_memory_channel[Any](event_buffer)
        self.local_address: Address | None = None

    # --- commands (any task) --------------------------------------------------------------------

    def add_peer(self, public_key: bytes, address: Address | None = None) -> None:
        """Know a peer (at `address` if given); its handshakes are answered and blobs may go to it."""
        self._channel.add_peer(public_key, address)
        if public_key not in self._links:
            self._links[public_key] = PeerLink(
                public_key, self._state_dir, self._link_settings, self._now()
            )
        self._wake()

    def remove_peer(self, public_key: bytes) -> None:
        self._channel.remove_peer(public_key)
        link = self._links.pop(public_key, None)
        if link is not None:
            link.close()
        for key in [key for key in self._opened_files if key[0] == public_key]:
            self._close_file(*key)
        self._wake()

    def connect(self, public_key: bytes) -> None:
        """Start a session now rather than on first use."""
        self._channel.connect(public_key, self._now())
        self._wake()

    async def send_blob(self, public_key: bytes, source: Path | bytes | BlobSource, *, name: str = "",
                        kind: str = "", sha256: bytes | None = None) -> int:
        """Offer a blob (a file, bytes, or a ready BlobSource) to a peer; returns the transfer id.

        A file's SHA-256 is computed in a worker thread unless its writer passes it (`sha256`). Progress
        and the outcome come as events."""
        link = self._link(public_key)
        opened: FileBlobSource | None = None
        if isinstance(source, Path):
            opened = await trio.to_thread.run_sync(partial(FileBlobSource, source, sha256, name=name, kind=kind))
            source = opened
        elif isinstance(source, bytes):
            source = BytesBlobSource(source, name=name, kind=kind)
        now = self._now()
        try:
            transfer_id = link.offer(source, now)
        except BaseException:
            if opened is not None:
                opened.close()
            raise
        if opened is not None:
            # Offering a blob already on its way returns the same transfer: keep the first file open.
            if (public_key, transfer_id) in self._opened_files:
                opened.close()
            else:
                self._opened_files[(public_key, transfer_id)] = opened
        self._channel.connect(public_key, now)
        self._wake()
        return transfer_id

    def accept(self, public_key: bytes, transfer_id: int) -> None:
        """Take an offered blob (TransferOffered); it resumes from what a partial file already holds."""
        self._link(public_key).accept(transfer_id, self._now())
        self._wake()

    def decline(self, public_key: bytes, transfer_id: int, reason: str = "declined") -> None:
        self._link(public_key).decline(transfer_id, reason, self._now())
        self._wake()

    def cancel(self, public_key: bytes, transfer_id: int) -> None:
        """Stop a transfer in either direction; the peer is told (no event comes back for our own cancel)."""
        self._link(public_key).cancel(transfer_id, self._now())
        self._close_file(public_key, transfer_id)
        self._wake()

    def allow_introduction_from(self, address: Address) -> None:
        """Answer first contact (an introduction) from this address: a peer added by address alone."""
        self._channel.allow_introduction_from(address)

    def start_introduction(self, address: Address) -> None:
        """First contact with a device known only by address; IntroductionCompleted names its key."""
        self._channel.start_introduction(address, self._now())
        self._wake()

    @property
    def channel(self) -> SecureChannel:
        """The secure channel core, for queries (sessions, endpoints, the unknown-device table).
        Commands that make it send must go through the Endpoint's methods, which wake the driver."""
        return self._channel

    def link(self, public_key: bytes) -> PeerLink:
        return self._link(public_key)

    # --- the driver -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the bound (host, port) once the socket is open."""
        udp = open_udp_socket(self._host, self._port, offload=self._offload)
        self.local_address = udp.local_address
        try:
            task_status.started(self.local_address)
            await self._serve(udp)
        finally:
            udp.close()
            for link in self._links.values():
                link.close()
            for key in list(self._opened_files):
                self._close_file(*key)
            await self._event_send.aclose()

    async def _serve(self, udp: UdpSocket) -> None:
        waiter = Waiter(udp.fileno())
        try:
            await self._loop(udp, waiter)
        finally:
            waiter.close()

    async def _loop(self, udp: UdpSocket, waiter: Waiter) -> None:
        channel = self._channel
        open_transport = channel.open_transport
        links = self._links
        clock = trio.current_time
        while True:
            batch = udp.receive_nowait(_RECEIVE_BATCH)
            # A fresh `now` for every datagram: processing a batch takes long enough to skew RTT samples.
            for data, address in batch:
                now = clock()
                if data[:1] == _TRANSPORT_TYPE_BYTE:
                    opened = open_transport(data, address, now)
                    if opened is not None:
                        link = links.get(opened[0])
                        if link is not None:
                            link.receive_payload(opened[1], now)
                else:
                    channel.receive_datagram(data, address, now)
            now = clock()
            await self._handle_channel_events(now)
            timer = channel.get_timer()
            if timer is not None and timer <= now:
                channel.handle_timer(now)
                await self._handle_channel_events(now)
            outgoing = channel.datagrams_to_send(now)
            for link in list(links.values()):
                now = clock()
                timer = link.get_timer()
                if timer is not None and timer <= now:
                    link.handle_timer(now)
                outgoing.extend(link.datagrams_to_send(channel, now))
                while (event := link.next_event()) is not None:
                    if isinstance(event, _OUTGOING_ENDINGS) and event.outgoing:
                        self._close_file(event.public_key, event.transfer_id)
                    await self._event_send.send(event)
            now = clock()
            await self._handle_channel_events(now)
            outgoing.extend(channel.datagrams_to_send(now))
            if outgoing:
                await udp.send_batch(outgoing)
            if batch or outgoing:
                await trio.lowlevel.checkpoint()
                continue
            await self._sleep_until(waiter, self._next_deadline())

    async def _sleep_until(self, waiter: Waiter, deadline: float) -> None:
        if self._woken:
            # A command came while the loop was busy: look at the cores again before sleeping.
            self._woken = False
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope() as scope:
            self._wake_scope = scope
            await waiter.wait_until(deadline)
        self._wake_scope = None
        self._woken = False

    def _next_deadline(self) -> float:
        timers = [self._channel.get_timer(), *(link.get_timer() for link in self._links.values())]
        return min((timer for timer in timers if timer is not None), default=math.inf)

    async def _handle_channel_events(self, now: float) -> None:
        channel = self._channel
        while (event := channel.next_event()) is not None:
            link = self._links.get(getattr(event, "public_key", b""))
            if link is not None:
                if isinstance(event, SessionEstablished):
                    link.on_session_established(event.endpoint, max_payload_towards(event.endpoint), now)
                elif isinstance(event, PeerEndpointChanged):
                    link.on_path_changed(event.endpoint, max_payload_towards(event.endpoint), now)
                elif isinstance(event, SessionLost):
                    link.on_session_lost(now)
            await self._event_send.send(event)

    def _close_file(self, public_key: bytes, transfer_id: int) -> None:
        opened = self._opened_files.pop((public_key, transfer_id), None)
        if opened is not None:
            opened.close()

    def _wake(self) -> None:
        self._woken = True
        if self._wake_scope is not None:
            self._wake_scope.cancel()

    def _now(self) -> float:
        return trio.current_time()

    def _link(self, public_key: bytes) -> PeerLink:
        link = self._links.get(public_key)
        if link is None:
            raise UnknownPeerError(f"no peer {public_key.hex()}; add it first")
        return link

