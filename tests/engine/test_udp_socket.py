import socket

import pytest
import trio

from ocsync_tui.net.udp_socket import UdpSocketError, max_payload_towards, open_udp_socket


async def receive_exactly(udp, count: int) -> list[tuple[bytes, tuple]]:
    received: list[tuple[bytes, tuple]] = []
    with trio.fail_after(5):
        while len(received) < count:
            received.extend(await udp.receive_batch())
    return received


def numbered(index: int, size: int) -> bytes:
    return index.to_bytes(4, "big") + bytes([index % 251]) * (size - 4)


@pytest.mark.trio
@pytest.mark.parametrize("offload", [True, False])
async def test_batch_arrives_intact_and_in_order_with_mixed_sizes_and_destinations(offload: bool) -> None:
    with (
        open_udp_socket("127.0.0.1", 0, offload=offload) as sender,
        open_udp_socket("127.0.0.1", 0, offload=offload) as first,
        open_udp_socket("127.0.0.1", 0, offload=offload) as second,
    ):
        # Runs of equal sizes (GSO-able), a short tail, a size change, a destination change, a long run.
        sizes = [1200] * 10 + [700] + [1200] * 3 + [1400] * 2 + [900] * 150
        targets = [first.local_address if i % 40 < 30 else second.local_address for i in range(len(sizes))]
        datagrams = [(numbered(i, size), target) for i, (size, target) in enumerate(zip(sizes, targets))]
        await sender.send_batch(datagrams)

        expect_first = [data for data, target in datagrams if target == first.local_address]
        expect_second = [data for data, target in datagrams if target == second.local_address]
        got_first = await receive_exactly(first, len(expect_first))
        got_second = await receive_exactly(second, len(expect_second))
        assert [data for data, _ in got_first] == expect_first
        assert [data for data, _ in got_second] == expect_second
        assert {source for _, source in got_first + got_second} == {sender.local_address}


@pytest.mark.trio
async def test_gso_and_gro_are_used_where_the_kernel_has_them() -> None:
    with open_udp_socket("127.0.0.1", 0) as udp:
        has_gso = True
        try:
            udp._sock.getsockopt(socket.SOL_UDP, 103)
        except OSError:
            has_gso = False
        assert udp.gso_enabled == has_gso
    with open_udp_socket("127.0.0.1", 0, offload=False) as plain:
        assert not plain.gso_enabled and not plain.gro_enabled


@pytest.mark.trio
async def test_dual_stack_socket_reports_ipv4_peers_in_dotted_form_and_replies_to_them() -> None:
    with open_udp_socket(None, 0) as server, open_udp_socket("127.0.0.1", 0) as client:
        port = server.local_address[1]
        await client.send(b"hello", ("127.0.0.1", port))
        [(data, source)] = await receive_exactly(server, 1)
        assert data == b"hello"
        assert source == client.local_address
        await server.send(b"back", source)
        [(reply, _)] = await receive_exactly(client, 1)
        assert reply == b"back"


@pytest.mark.trio
async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = open_udp_socket("::1", 0)
    except UdpSocketError:
        pytest.skip("no IPv6 loopback address")
    with server, open_udp_socket("::1", 0) as client:
        await client.send(b"six", server.local_address)
        [(data, source)] = await receive_exactly(server, 1)
        assert data == b"six" and source == ("::1", client.local_address[1])


def test_port_in_use_is_a_clear_error() -> None:
    with open_udp_socket("127.0.0.1", 0) as taken:
        with pytest.raises(UdpSocketError, match=f"{taken.local_address[1]} is already in use"):
            open_udp_socket("127.0.0.1", taken.local_address[1])


@pytest.mark.trio
async def test_refused_sends_are_lost_datagrams_not_exceptions() -> None:
    with open_udp_socket("127.0.0.1", 0) as sender, open_udp_socket("127.0.0.1", 0) as receiver:
        closed = open_udp_socket("127.0.0.1", 0)
        closed_address = closed.local_address
        closed.close()
        too_large = b"x" * 70000
        await sender.send_batch([(b"a", closed_address), (too_large, receiver.local_address), (b"b", closed_address)])
        await sender.send(b"after", receiver.local_address)
        [(data, _)] = await receive_exactly(receiver, 1)
        assert data == b"after"
        assert sender.receive_nowait() == []


@pytest.mark.trio
async def test_receive_nowait_is_empty_when_nothing_is_queued_and_receive_batch_is_cancellable() -> None:
    with open_udp_socket("127.0.0.1", 0) as udp:
        assert udp.receive_nowait() == []
        with trio.move_on_after(0.05) as scope:
            await udp.receive_batch()
        assert scope.cancelled_caught


def test_max_payload_towards_loopback_is_its_mtu_minus_headers() -> None:
    with open("/sys/class/net/lo/mtu") as mtu_file:
        mtu = int(mtu_file.read())
    assert max_payload_towards(("127.0.0.1", 9)) == min(mtu - 28, 65507)
