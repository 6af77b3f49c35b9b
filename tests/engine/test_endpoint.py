import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nacl.signing
import pytest
import trio

from ocsync_tui.net.endpoint import Endpoint
from ocsync_tui.net.events import (
    IntroductionCompleted,
    PathMtuChanged,
    PeerDown,
    PeerEndpointChanged,
    PeerUp,
    SessionEstablished,
    TransferCancelled,
    TransferCompleted,
    TransferFailed,
    TransferOffered,
    UnknownDeviceAttempt,
)
from ocsync_tui.net.lossy_link import Impairments, LossyLink
from ocsync_tui.net.partial_store import PartialStore
from ocsync_tui.net.peer_link import PeerLinkSettings
from ocsync_tui.net.udp_socket import open_udp_socket


def signing_key(number: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([number]) * 32)


class Peer:
    """An endpoint in this trio run, with every event it emitted kept for the test to look at."""

    def __init__(
        self,
        number: int,
        state_dir: Path,
        *,
        accept_offers: bool = True,
        settings: PeerLinkSettings | None = None,
        host: str | None = "127.0.0.1",
    ) -> None:
        self.endpoint = Endpoint(signing_key(number), state_dir=state_dir, host=host, port=0, link_settings=settings)
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
        # Loopback carries large datagrams: probing found the cap.
        assert PathMtuChanged(taker.public_key, PeerLinkSettings().max_datagram_size) in giver.of(PathMtuChanged)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_50_mb_through_a_lossy_link_arrive_byte_identical(tmp_path: Path) -> None:
    impairments = Impairments(loss=0.03, duplicate=0.01, corrupt=0.01, reorder=0.02, reorder_delay=0.003,
                              delay=0.002, jitter=0.001)
    blob_path = tmp_path / "blob"
    blob_path.write_bytes(os.urandom(50_000_000))
    async with trio.open_nursery() as nursery:
        giver, taker = Peer(1, tmp_path / "giver"), Peer(2, tmp_path / "taker")
        await giver.start(nursery)
        await taker.start(nursery)
        link = LossyLink(taker.address, impairments, seed=3)
        link_address = await nursery.start(link.run)
        taker.endpoint.add_peer(giver.public_key)
        giver.endpoint.add_peer(taker.public_key, link_address)
        completed = await transfer(giver, taker, blob_path, timeout=120)
        assert hashlib.sha256(Path(completed.path).read_bytes()).digest() == hashlib.sha256(blob_path.read_bytes()).digest()
        counters = link.forward.counters
        assert counters.lost and counters.duplicated and counters.corrupted and counters.reordered
        nursery.cancel_scope.cancel()


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next_json(self) -> dict:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some()
            assert chunk, "the receiver process exited"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


async def start_receiver(state_dir: Path, port: int, giver: Peer) -> tuple[trio.Process, LineReader, tuple]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.engine.blob_receiver", str(state_dir), str(port), (bytes([2]) * 32).hex(),
         giver.public_key.hex(), *map(str, giver.address)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    reader = LineReader(process.stdout)
    address = tuple((await reader.next_json())["address"])
    return process, reader, address


@pytest.mark.trio
async def test_a_killed_receiver_resumes_without_the_data_it_had(tmp_path: Path) -> None:
    size = 30_000_000
    blob_path = tmp_path / "blob"
    blob_path.write_bytes(os.urandom(size))
    sha256 = hashlib.sha256(blob_path.read_bytes()).digest()
    state_dir = tmp_path / "taker"
    async with trio.open_nursery() as nursery:
        giver = Peer(1, tmp_path / "giver")
        await giver.start(nursery)
        with trio.fail_after(120):
            process, reader, address = await start_receiver(state_dir, 0, giver)
            giver.endpoint.add_peer(signing_key(2).verify_key.encode(), address)
            taker_key = signing_key(2).verify_key.encode()
            await giver.endpoint.send_blob(taker_key, blob_path)
            # Kill it once a good part has been received (and some of it recorded durably).
            while (await reader.next_json()).get("progress", 0) < size * 0.4:
                pass
            process.kill()
            await process.wait()

            partial = PartialStore(state_dir).open(giver.public_key, sha256, size)
            had = partial.bytes_present
            partial.close()
            assert 0 < had < size
            sent_before_restart = giver.endpoint.link(taker_key).transfers.data_bytes_sent

            process, reader, _ = await start_receiver(state_dir, address[1], giver)
            while "completed" not in (message := await reader.next_json()):
                assert "failed" not in message, message
            assert hashlib.sha256(Path(message["completed"]).read_bytes()).digest() == sha256
            resent = giver.endpoint.link(taker_key).transfers.data_bytes_sent - sent_before_restart
            # Only what was missing goes again (plus a little retransmission), not the whole blob.
            assert resent <= (size - had) * 1.1 + 200_000, (resent, size, had)
            process.kill()
            await process.wait()
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_garbage_replays_forgeries_and_strangers_are_dropped_and_the_session_survives(tmp_path: Path) -> None:
    captured: list[bytes] = []
    async with trio.open_nursery() as nursery:
        giver, taker = Peer(1, tmp_path / "giver"), Peer(2, tmp_path / "taker")
        stranger = Peer(3, tmp_path / "stranger")
        for peer in (giver, taker, stranger):
            await peer.start(nursery)
        # A clean link: every captured datagram reaches the taker, so sending it again is a true replay
        # (an authentic datagram the taker never saw would be a delayed packet, which WireGuard accepts).
        link = LossyLink(taker.address)
        link.forward.tap = captured.append
        link_address = await nursery.start(link.run)
        taker.endpoint.add_peer(giver.public_key)
        giver.endpoint.add_peer(taker.public_key, link_address)
        # The stranger knows the taker's key, but the taker does not know the stranger.
        stranger.endpoint.add_peer(taker.public_key, taker.address)
        # A device that got the taker's key wrong: its initiations fail mac1 and must get no reply.
        confused = Peer(4, tmp_path / "confused")
        await confused.start(nursery)
        confused.endpoint.add_peer(signing_key(9).verify_key.encode(), taker.address)

        first = await transfer(giver, taker, os.urandom(2_000_000), timeout=60)
        assert Path(first.path).stat().st_size == 2_000_000

        with open_udp_socket("127.0.0.1", 0) as attacker:
            garbage = [b"", b"\x00", b"\x04", os.urandom(31), b"\x04\x01\x00\x00" + os.urandom(60),
                       b"\x01\x01\x00\x00" + os.urandom(176), os.urandom(1200), os.urandom(60000)]
            await attacker.send_batch([(data, taker.address) for data in garbage])
            # Replays of everything the giver sent (its initiation, the transfer), from elsewhere, and
            # forgeries: the same datagrams with one bit flipped.
            forged = [data[:-1] + bytes((data[-1] ^ 1,)) for data in captured]
            for hostile in (captured, forged):
                for start in range(0, len(hostile), 64):
                    await attacker.send_batch([(data, taker.address) for data in hostile[start : start + 64]])
            stranger.endpoint.connect(taker.public_key)
            confused.endpoint.connect(signing_key(9).verify_key.encode())
            attempt = await taker.wait_for(UnknownDeviceAttempt, timeout=10)
            assert attempt.public_key == stranger.public_key

            second = await transfer(giver, taker, os.urandom(500_000), timeout=60)
            assert Path(second.path).stat().st_size == 500_000
            await trio.sleep(0.2)
            assert attacker.receive_nowait() == [], "nothing may be answered to garbage or replays"

        assert [event.public_key for event in taker.of(SessionEstablished)] == [giver.public_key]
        assert not [event for event in taker.of(PeerEndpointChanged) if event.endpoint != link.far_facing_address]
        assert not stranger.of(SessionEstablished) and not confused.of(SessionEstablished)
        assert not [event for event in taker.of(UnknownDeviceAttempt) if event.public_key == confused.public_key]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_keepalives_report_a_peer_up_then_down_when_it_goes_silent(tmp_path: Path) -> None:
    settings = PeerLinkSettings(keepalive_interval=0.1, keepalive_misses=2)
    async with trio.open_nursery() as nursery:
        watcher = Peer(1, tmp_path / "watcher", settings=settings)
        await watcher.start(nursery)
        async with trio.open_nursery() as doomed_nursery:
            doomed = Peer(2, tmp_path / "doomed", settings=settings)
            await doomed.start(doomed_nursery)
            doomed.endpoint.add_peer(watcher.public_key, watcher.address)
            watcher.endpoint.add_peer(doomed.public_key, doomed.address)
            await watcher.wait_for(PeerUp, timeout=10)
            await doomed.wait_for(PeerUp, timeout=10)
            assert not watcher.of(PeerDown)
            doomed_nursery.cancel_scope.cancel()
        down = await watcher.wait_for(PeerDown, timeout=10)
        assert down.public_key == doomed.public_key and down.silent_for >= 0.2
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_files_sent_are_closed_when_their_transfer_ends_or_is_cancelled(tmp_path: Path) -> None:
    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    async with trio.open_nursery() as nursery:
        giver, taker = Peer(1, tmp_path / "giver"), Peer(2, tmp_path / "taker", accept_offers=False)
        await giver.start(nursery)
        await taker.start(nursery)
        taker.endpoint.add_peer(giver.public_key)
        giver.endpoint.add_peer(taker.public_key, taker.address)
        for index in range(2):
            (tmp_path / f"blob{index}").write_bytes(os.urandom(100_000 + index))
        before = open_descriptors()
        first = await giver.endpoint.send_blob(taker.public_key, tmp_path / "blob0")
        assert await giver.endpoint.send_blob(taker.public_key, tmp_path / "blob0") == first
        second = await giver.endpoint.send_blob(taker.public_key, tmp_path / "blob1")
        assert open_descriptors() == before + 2
        offered = await taker.wait_for(TransferOffered, timeout=10, where=lambda event: event.transfer_id == first)
        taker.endpoint.accept(offered.public_key, offered.transfer_id)
        await giver.wait_for(TransferCompleted, timeout=10, where=lambda event: event.transfer_id == first)
        giver.endpoint.cancel(taker.public_key, second)
        assert open_descriptors() == before
        cancelled = await taker.wait_for(TransferCancelled, timeout=10)
        assert cancelled.transfer_id == second
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_ipv6_and_a_dual_stack_listener(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    async with trio.open_nursery() as nursery:
        giver = Peer(1, tmp_path / "giver", host="::1")
        taker = Peer(2, tmp_path / "taker", host=None)
        await giver.start(nursery)
        await taker.start(nursery)
        assert giver.address[0] == "::1"
        taker.endpoint.add_peer(giver.public_key)
        giver.endpoint.add_peer(taker.public_key, ("::1", taker.address[1]))
        blob = os.urandom(300_000)
        completed = await transfer(giver, taker, blob, timeout=30)
        assert Path(completed.path).read_bytes() == blob
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_an_introduction_by_address_reveals_the_key_and_grants_no_session(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        newcomer, host = Peer(1, tmp_path / "newcomer"), Peer(2, tmp_path / "host")
        await newcomer.start(nursery)
        await host.start(nursery)
        host.endpoint.allow_introduction_from(newcomer.address)
        newcomer.endpoint.start_introduction(host.address)
        learnt = await newcomer.wait_for(IntroductionCompleted, timeout=10)
        assert learnt.public_key == host.public_key
        told = await host.wait_for(IntroductionCompleted, timeout=10)
        assert told.public_key == newcomer.public_key
        assert not newcomer.of(SessionEstablished) and not host.of(SessionEstablished)
        nursery.cancel_scope.cancel()
