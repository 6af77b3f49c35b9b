"""control_client against a real ControlServer on 127.0.0.1: the CLI's synchronous client (the server in
its own thread, as a daemon would be another process) and the TUI's async connection."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from trio_websocket import serve_websocket

from ocsync_tui.control_client import (
    DaemonCommandError,
    DaemonConnectionError,
    DaemonNotRunningError,
    connect_to_daemon,
    open_daemon_connection,
)
from ocsync_tui.engine.control import ensure_token
from ocsync_tui.errors import OcsyncError

from .servers import ScriptedHandler, daemon_in_thread, start_server, write_daemon_info


def free_tcp_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_daemon_json_means_no_daemon(tmp_path) -> None:
    assert connect_to_daemon(tmp_path) is None


def test_a_stale_daemon_json_whose_port_is_silent_means_no_daemon(tmp_path) -> None:
    ensure_token(tmp_path)
    write_daemon_info(tmp_path, free_tcp_port())
    assert connect_to_daemon(tmp_path) is None


def test_a_stale_daemon_json_of_a_dead_process_means_no_daemon(tmp_path) -> None:
    ensure_token(tmp_path)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with daemon_in_thread(tmp_path):
        # A control server answers on that port, but the pid that wrote the file is gone.
        port = json.loads((tmp_path / "daemon.json").read_text())["control_port"]
        write_daemon_info(tmp_path, port, pid=int(finished.stdout))
        assert connect_to_daemon(tmp_path) is None


def test_a_damaged_daemon_json_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "daemon.json").write_text('{"pid": 12')
    with pytest.raises(DaemonConnectionError, match="daemon.json is damaged; if no daemon runs on"):
        connect_to_daemon(tmp_path)


def test_the_cli_client_runs_commands_and_reports_the_daemons_errors(tmp_path) -> None:
    with daemon_in_thread(tmp_path) as handler:
        handler.state = {"udp_port": 45000, "peers": [{"name": "bob"}]}
        client = connect_to_daemon(tmp_path)
        assert client is not None
        assert client.call("peer.add", name="carol", device_id="ID") == {"name": "carol", "device_id": "ID"}
        with pytest.raises(OcsyncError) as refused:
            client.call("peer.add", name="taken")
        assert isinstance(refused.value, DaemonCommandError)
        assert str(refused.value) == "a peer named taken exists already; pick another name"
        with pytest.raises(DaemonCommandError, match="^unknown command 'nope'"):
            client.call("nope")
        assert client.snapshot() == {"udp_port": 45000, "peers": [{"name": "bob"}]}
        assert client.call("folder.add", path=tmp_path / "docs", name=None) == {"command": "folder.add"}
        with pytest.raises(TypeError, match="must be JSON or a path, not bytes"):
            client.call("folder.add", path=b"/raw")
        assert handler.calls == [
            ("peer.add", {"name": "carol", "device_id": "ID"}),
            ("peer.add", {"name": "taken"}),
            ("folder.add", {"path": str(tmp_path / "docs"), "name": None}),
        ]


def test_a_daemon_that_refuses_our_token_is_an_error_not_a_missing_daemon(tmp_path) -> None:
    with daemon_in_thread(tmp_path):
        token_path = tmp_path / "control.token"
        token_path.write_text("cd" * 32)
        with pytest.raises(DaemonConnectionError, match="^the daemon closed the connection: wrong or missing token"):
            connect_to_daemon(tmp_path)


def test_the_cli_client_reaches_a_daemon_in_another_process(tmp_path) -> None:
    server_code = """
import sys, trio
from pathlib import Path
from tests.control.servers import ScriptedHandler, start_server, write_daemon_info
from ocsync_tui.engine.control import ensure_token

async def main(home):
    async with trio.open_nursery() as nursery:
        _, port = await start_server(nursery, ScriptedHandler(), ensure_token(home))
        write_daemon_info(home, port)
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()

trio.run(main, Path(sys.argv[1]))
"""
    process = subprocess.Popen(
        [sys.executable, "-c", server_code, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )
    try:
        assert process.stdout.readline() == "ready\n"
        client = connect_to_daemon(tmp_path)
        assert client is not None
        assert client.call("folder.list") == {"command": "folder.list"}
    finally:
        process.stdin.close()
        assert process.wait(10) == 0
    assert connect_to_daemon(tmp_path) is None  # its daemon.json is stale now


@pytest.mark.trio
async def test_the_async_connection_gives_snapshot_results_and_events_in_order(tmp_path) -> None:
    handler = ScriptedHandler()
    handler.state = {"folders": [{"name": "docs"}]}
    async with trio.open_nursery() as nursery:
        server, port = await start_server(nursery, handler, ensure_token(tmp_path))
        write_daemon_info(tmp_path, port)
        async with open_daemon_connection(tmp_path) as connection:
            assert connection.snapshot == {"folders": [{"name": "docs"}]}
            assert await connection.call("share", folder="docs", peer="bob") == {"command": "share"}
            with pytest.raises(DaemonCommandError, match="^internal error: RuntimeError"):
                await connection.call("log", folder="docs", path="a")
            for n in range(50):
                server.publish({"kind": "commit", "n": n})
            seen = []
            with trio.fail_after(10):
                async for event in connection.events():
                    seen.append(event)
                    if len(seen) == 50:
                        break
            assert seen == [{"kind": "commit", "n": n} for n in range(50)]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_events_and_pending_calls_end_with_a_clear_error_when_the_daemon_goes(tmp_path) -> None:
    handler = ScriptedHandler()

    async def daemon(task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                _, port = await start_server(inner, handler, ensure_token(tmp_path))
                task_status.started((scope, port))

    async with trio.open_nursery() as nursery:
        daemon_scope, port = await nursery.start(daemon)
        write_daemon_info(tmp_path, port)
        async with open_daemon_connection(tmp_path) as connection:
            outcome = {}

            async def waiting_call() -> None:
                with pytest.raises(DaemonConnectionError) as lost:
                    await connection.call("sync")
                outcome["call"] = str(lost.value)

            nursery.start_soon(waiting_call)
            with trio.fail_after(10):
                while not handler.calls:
                    await trio.sleep(0.01)
            daemon_scope.cancel()
            with trio.fail_after(10), pytest.raises(DaemonConnectionError) as lost:
                async for _ in connection.events():
                    pass
            assert str(lost.value) == "the connection to the daemon was lost (did the daemon stop?)"
            with pytest.raises(DaemonConnectionError):
                await connection.call("status")
            with trio.fail_after(10):
                while "call" not in outcome:
                    await trio.sleep(0.01)
            assert outcome["call"] == "the connection to the daemon was lost (did the daemon stop?)"


@pytest.mark.trio
async def test_the_async_connection_without_a_daemon_says_so(tmp_path) -> None:
    with pytest.raises(DaemonNotRunningError, match="no daemon is running on .*; start one with `ocsync daemon`"):
        async with open_daemon_connection(tmp_path):
            pass
    ensure_token(tmp_path)
    port = free_tcp_port()
    write_daemon_info(tmp_path, port)
    with pytest.raises(DaemonNotRunningError, match=f"nothing answers on control port {port}"):
        async with open_daemon_connection(tmp_path):
            pass


@pytest.mark.trio
async def test_an_error_inside_the_connection_block_comes_out_as_itself(tmp_path) -> None:
    async with trio.open_nursery() as nursery:
        _, port = await start_server(nursery, ScriptedHandler(), ensure_token(tmp_path))
        write_daemon_info(tmp_path, port)
        with pytest.raises(KeyError):
            async with open_daemon_connection(tmp_path):
                raise KeyError("mine")
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_server_that_does_not_serve_v1_is_named_as_a_release_mismatch(tmp_path) -> None:
    async def only_v2(request) -> None:
        await request.reject(404)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, only_v2, "127.0.0.1", 0, None)
        ensure_token(tmp_path)
        write_daemon_info(tmp_path, server.port)
        mismatch = r"does not serve control API version 1 \(HTTP 404\); are the daemon and this client different"
        with pytest.raises(DaemonConnectionError, match=mismatch):
            async with open_daemon_connection(tmp_path):
                pass
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("pid", [0, -1])
def test_a_daemon_json_with_an_impossible_pid_is_damaged(tmp_path, pid) -> None:
    ensure_token(tmp_path)
    write_daemon_info(tmp_path, free_tcp_port(), pid=pid)
    with pytest.raises(DaemonConnectionError, match="daemon.json is damaged"):
        connect_to_daemon(tmp_path)
