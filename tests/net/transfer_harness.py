"""Two TransferManagers joined by the fake link, as test_transfer.py and bench/transfer_core.py need."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

from ocsync_tui.net import events
from ocsync_tui.net.partial_store import PartialStore
from ocsync_tui.net.transfer import TransferManager
from tests.net.fake_link import FakeNetwork, FramePeer, LinkConditions

GIVER, TAKER = ("198.51.100.1", 44996), ("203.0.113.2", 44996)
GIVER_KEY, TAKER_KEY = b"G" * 32, b"T" * 32


class Peer(FramePeer):
    """A manager on the fake link. It accepts every offer (as the engine would after its checks), and
    with `sealed` a CRC32 trailer stands in for the secure channel's AEAD, which in real life drops
    corrupted datagrams before the transfer core sees them."""

    def __init__(self, core, peer_address, network, *, sealed=True, auto_accept=True, max_frame_size=1200):
        super().__init__(core, peer_address, max_frame_size)
        self.network = network
        self.sealed = sealed
        self.auto_accept = auto_accept

    def receive_datagram(self, data, address, now):
        if self.sealed:
            data, trailer = data[:-4], data[-4:]
            if zlib.crc32(data).to_bytes(4, "big") != trailer:
                return
        self.core.receive_frame(data, now)

    def datagrams_to_send(self, now):
        frames = self.core.frames_to_send(now, self.max_frame_size)
        if self.sealed:
            frames = [frame + zlib.crc32(frame).to_bytes(4, "big") for frame in frames]
        return [(frame, self.peer_address) for frame in frames]

    def next_event(self):
        event = self.core.next_event()
        if self.auto_accept and isinstance(event, events.TransferOffered):
            self.core.accept(event.transfer_id, self.network.now)
        return event


class Pair:
    def __init__(self, tmp_path: Path, conditions: LinkConditions | None = None, seed: int = 0, **peer_options):
        self.tmp_path = tmp_path
        self.network = FakeNetwork(seed=seed, conditions=conditions or LinkConditions())
        self.peer_options = peer_options
        self.random = random.Random(seed)
        self.giver = self.network.attach(self._peer(TAKER_KEY, "giver", TAKER), GIVER)
        self.taker = self.network.attach(self._peer(GIVER_KEY, "taker", GIVER), TAKER)

    def _peer(self, remote_key: bytes, name: str, remote_address) -> Peer:
        manager = TransferManager(remote_key, PartialStore(self.tmp_path / name), random_bytes=self.random.randbytes)
        return Peer(manager, remote_address, self.network, **self.peer_options)

    def restart(self, node) -> None:
        """The node's process dies (nothing is closed or flushed) and a new manager starts from disk."""
        name = "giver" if node is self.giver else "taker"
        node.core = self._peer(node.core.core.public_key, name, node.core.peer_address)

    def completed(self, node, transfer_id=None):
        return [e for e in node.events_of(events.TransferCompleted) if transfer_id in (None, e.transfer_id)]

    def received_over(self, size: int) -> bool:
        return any(event.bytes_done > size for event in self.taker.events_of(events.TransferProgress))

    def data_frames_sent(self, node) -> int:
        return sum(1 for datagram in node.sent if datagram.data[1] == 1)
