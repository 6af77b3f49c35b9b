import sys

import pytest
import trio

from ocsync_tui.net.udp_socket import open_udp_socket
from ocsync_tui.net.wakeup import Waiter


@pytest.mark.trio
async def test_waits_until_the_deadline_when_nothing_arrives() -> None:
    with open_udp_socket("127.0.0.1", 0) as udp:
        waiter = Waiter(udp.fileno())
        try:
            assert waiter.precise == sys.platform.startswith("linux")
            for delay in (0.0003, 0.002, 0.02):
                deadline = trio.current_time() + delay
                await waiter.wait_until(deadline)
                assert trio.current_time() >= deadline
        finally:
            waiter.close()


@pytest.mark.trio
async def test_a_readable_socket_ends_the_wait_and_a_stale_timer_does_not() -> None:
    with open_udp_socket("127.0.0.1", 0) as udp, open_udp_socket("127.0.0.1", 0) as sender:
        waiter = Waiter(udp.fileno())
        try:
            # A timer that was armed and then superseded must not wake a later wait.
            await waiter.wait_until(trio.current_time() + 0.001)
            with trio.move_on_after(0.05) as idle:
                await waiter.wait_until(trio.current_time() + 10)
            assert idle.cancelled_caught
            await sender.send(b"x", udp.local_address)
            with trio.fail_after(5):
                await waiter.wait_until(trio.current_time() + 10)
            assert udp.receive_nowait()[0][0] == b"x"
        finally:
            waiter.close()
