import hashlib
import os
from pathlib import Path

import nacl.signing
import pytest
import trio

from ocsync_tui.net.endpoint import Endpoint
from ocsync_tui.net.events import (
    SessionEstablished,
    TransferCompleted,
    TransferFailed,
    TransferOffered,
    UnknownDeviceAttempt,
)
from ocsync_tui.net.lossy_link import Impairments, LossyLink


def signing_key(number: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([number]) * 32)


class Peer:
    """An endpoint in this trio run, with every event it emitted kept for the test to look at."""

    def __init__(self, number: int, state_dir: Path, *, accept_offers: bool = True) -> None:
        self.endpoint = Endpoint(signing_key(number), state_dir=state_dir, host="127.0.0.1", port=0)
        self.public_key = self.endpoint.public_key
        self.events: list[object] = []
        self.accept_offers = accept_offers
        self.changed = trio.Event()
        self.address = None

    async def start(self, nursery: trio.Nursery) -> None:
        self.address = await nursery.start(self.endpoint.run)
        nursery.start_soon(self._consume)

    async def _consume(self) -> None:
        async for event in self.endpoint.events:
            self.events.append(event)
            if self.accept_offers and isinstance(event, TransferOffered):
                self.endpoint.accept(event.public_key, event.transfer_id)
            self.changed.set()
            self.changed = trio.Event()

    def of(self, kind: type) -> list:
        return [event for event in self.events if isinstance(event, kind)]

    async def wait_for(self, kind: type, timeout: float, where=lambda event: True):
        with trio.fail_after(timeout):
            while True:
                found = [event for event in self.of(kind) if where(event)]
                if found:
                    return found[0]
                failed = self.of(TransferFailed)
                assert not failed, failed
                await self.changed.wait()


async def transfer(giver: Peer, taker: Peer, blob: bytes | Path, timeout: float) -> TransferCompleted:
    transfer_id = await giver.endpoint.send_blob(taker.public_key, blob)
    completed = await taker.wait_for(TransferCompleted, timeout, lambda event: event.transfer_id == transfer_id)
    await giver.wait_for(TransferCompleted, timeout, lambda event: event.transfer_id == transfer_id)
    return completed


@pytest.mark.trio
async def test_a_blob_goes_across_loopback_and_arrives_verified(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        giver, taker = Peer(1, tmp_path / "giver"), Peer(2, tmp_path / "taker")
        await giver.start(nursery)
        await taker.start(nursery)
        taker.endpoint.add_peer(giver.public_key)
        giver.endpoint.add_peer(taker.public_key, taker.address)
        blob = os.urandom(3_000_000)
        completed = await transfer(giver, taker, blob, timeout=30)
        assert Path(completed.path).read_bytes() == blob
        assert completed.sha256 == hashlib.sha256(blob).digest()
        assert [event.public_key for event in taker.of(SessionEstablished)] == [giver.public_key]
        nursery.cancel_scope.cancel()
