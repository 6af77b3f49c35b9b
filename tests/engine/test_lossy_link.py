import pytest
import trio

from ocsync_tui.net.lossy_link import Impairments, LossyLink
from ocsync_tui.net.udp_socket import open_udp_socket


def numbered(index: int, size: int = 200) -> bytes:
    return index.to_bytes(4, "big") + bytes([index % 251]) * (size - 4)


async def collect(udp, *, quiet_for: float = 0.15, limit: float = 5.0) -> list[tuple[bytes, tuple, float]]:
    """Everything that arrives until nothing has come for `quiet_for` seconds."""
    received = []
    with trio.fail_after(limit):
        while True:
            with trio.move_on_after(quiet_for) as idle:
                batch = await udp.receive_batch()
            if idle.cancelled_caught:
                return received
            now = trio.current_time()
            received.extend((data, source, now) for data, source in batch)


async def send_through(impairments: Impairments, count: int, *, seed: int = 7, size: int = 200):
    """Send `count` numbered datagrams near → far through a fresh link; return what arrived and the link."""
    with open_udp_socket("127.0.0.1", 0) as near, open_udp_socket("127.0.0.1", 0) as far:
        link = LossyLink(far.local_address, impairments, seed=seed)
        async with trio.open_nursery() as nursery:
            link_address = await nursery.start(link.run)
            sent_at = trio.current_time()
            for start in range(0, count, 50):
                await near.send_batch([(numbered(i, size), link_address) for i in range(start, min(count, start + 50))])
            arrived = await collect(far)
            nursery.cancel_scope.cancel()
        return arrived, link, sent_at


@pytest.mark.trio
async def test_clean_link_forwards_both_ways_in_order_and_replies_reach_the_near_side() -> None:
    with open_udp_socket("127.0.0.1", 0) as near, open_udp_socket("127.0.0.1", 0) as far:
        link = LossyLink(far.local_address)
        async with trio.open_nursery() as nursery:
            link_address = await nursery.start(link.run)
            datagrams = [numbered(i) for i in range(500)]
            await near.send_batch([(data, link_address) for data in datagrams])
            arrived = await collect(far)
            assert [data for data, _, _ in arrived] == datagrams
            assert {source for _, source, _ in arrived} == {link.far_facing_address}

            await far.send(b"reply", link.far_facing_address)
            [(reply, source, _)] = await collect(near)
            assert reply == b"reply" and source == link_address
            nursery.cancel_scope.cancel()
    assert link.forward.counters.forwarded == 500
    assert link.backward.counters.forwarded == 1


@pytest.mark.trio
async def test_loss_is_seeded_and_counted() -> None:
    impairments = Impairments(loss=0.3)
    first, link, _ = await send_through(impairments, 1000, seed=11)
    second, _, _ = await send_through(impairments, 1000, seed=11)
    other_seed, _, _ = await send_through(impairments, 1000, seed=12)
    indices = [int.from_bytes(data[:4], "big") for data, _, _ in first]
    assert indices == [int.from_bytes(data[:4], "big") for data, _, _ in second]
    assert indices != [int.from_bytes(data[:4], "big") for data, _, _ in other_seed]
    assert link.forward.counters.lost == 1000 - len(indices)
    assert 200 < link.forward.counters.lost < 400


@pytest.mark.trio
async def test_duplication_and_corruption_flip_exactly_one_bit_per_copy() -> None:
    arrived, link, _ = await send_through(Impairments(duplicate=1.0, corrupt=1.0), 100)
    assert len(arrived) == 200
    assert link.forward.counters.duplicated == 100 and link.forward.counters.corrupted == 200
    for position, (data, _, _) in enumerate(arrived):
        original = numbered(position // 2)
        differing_bits = sum(bin(a ^ b).count("1") for a, b in zip(data, original))
        assert len(data) == len(original) and differing_bits == 1


@pytest.mark.trio
async def test_delay_holds_every_datagram_at_least_that_long() -> None:
    arrived, _, sent_at = await send_through(Impairments(delay=0.05, jitter=0.01), 50)
    assert len(arrived) == 50
    assert min(at for _, _, at in arrived) - sent_at >= 0.05


@pytest.mark.trio
async def test_reordering_delivers_everything_out_of_order() -> None:
    arrived, link, _ = await send_through(Impairments(reorder=0.2, reorder_delay=0.02), 300)
    indices = [int.from_bytes(data[:4], "big") for data, _, _ in arrived]
    assert sorted(indices) == list(range(300))
    assert indices != sorted(indices)
    assert link.forward.counters.reordered > 0


@pytest.mark.trio
async def test_rate_limit_queues_then_tail_drops() -> None:
    rate, queue = 100_000, 10_000
    arrived, link, sent_at = await send_through(Impairments(rate=rate, queue_bytes=queue), 100, size=1000)
    counters = link.forward.counters
    assert counters.queue_dropped > 0
    assert len(arrived) == counters.forwarded == 100 - counters.queue_dropped
    # The queue holds about `queue` bytes beyond the one in service; nothing leaves faster than `rate`.
    assert len(arrived) <= queue // 1000 + 2
    assert arrived[-1][2] - sent_at >= (len(arrived) * 1000) / rate * 0.99


@pytest.mark.trio
async def test_far_side_may_speak_first_when_the_near_address_is_given() -> None:
    with open_udp_socket("127.0.0.1", 0) as near, open_udp_socket("127.0.0.1", 0) as far:
        link = LossyLink(far.local_address, near=near.local_address)
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await far.send(b"first", link.far_facing_address)
            [(data, _, _)] = await collect(near)
            assert data == b"first"
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_strangers_cannot_inject_into_the_backward_direction() -> None:
    with (
        open_udp_socket("127.0.0.1", 0) as near,
        open_udp_socket("127.0.0.1", 0) as far,
        open_udp_socket("127.0.0.1", 0) as stranger,
    ):
        link = LossyLink(far.local_address, near=near.local_address)
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await stranger.send(b"spoof", link.far_facing_address)
            assert await collect(near) == []
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_tap_sees_each_datagram_before_impairments() -> None:
    seen: list[bytes] = []
    with open_udp_socket("127.0.0.1", 0) as near, open_udp_socket("127.0.0.1", 0) as far:
        link = LossyLink(far.local_address, Impairments(loss=1.0))
        link.forward.tap = seen.append
        async with trio.open_nursery() as nursery:
            link_address = await nursery.start(link.run)
            await near.send_batch([(numbered(i), link_address) for i in range(20)])
            assert await collect(far) == []
            nursery.cancel_scope.cancel()
    assert seen == [numbered(i) for i in range(20)]
