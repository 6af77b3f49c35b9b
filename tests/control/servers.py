"""A control server with a small scripted handler, on a real 127.0.0.1 port, for the control tests.

The handler stands in for the engine, whose commands are not under test here: it answers a few commands
the way the engine will (results, OcsyncError, a crash) and records what it was asked.
"""

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import trio
from trio_websocket import open_websocket

from ocsync_tui.engine.control import CONTROL_PATH, ControlServer, ensure_token
from ocsync_tui.errors import OcsyncError


class ScriptedHandler:
    def __init__(self) -> None:
        self.state: dict = {"folders": [], "peers": [], "udp_port": 44996}
        self.calls: list[tuple[str, dict]] = []
        self.release_sync = trio.Event()
        self.finished: list[str] = []

    def snapshot(self) -> dict:
        return self.state

    async def handle(self, command: str, args: dict):
        self.calls.append((command, args))
        if command == "peer.add":
            if args.get("name") == "taken":
                raise OcsyncError("a peer named taken exists already; pick another name")
            return {"name": args["name"], "device_id": args.get("device_id")}
        if command == "log":
            raise RuntimeError("the engine tripped\nover two lines")
        if command == "offers":
            return {"not json": object()}
        if command == "sync":
            await self.release_sync.wait()
            self.finished.append(command)
            return {"exchanges": []}
        return {"command": command}


async def start_server(nursery: trio.Nursery, handler=None, token: str = "ab" * 32) -> tuple[ControlServer, int]:
    server = ControlServer(token, handler or ScriptedHandler())
    port = await nursery.start(server.run)
    return server, port


async def hello(socket, token: str = "ab" * 32, **extra) -> dict:
    """Authenticate on a raw websocket and return the snapshot message."""
    await socket.send_message(json.dumps({"type": "hello", "token": token, "version": 1, **extra}))
    return json.loads(await socket.get_message())


def raw_client(port: int, **options):
    return open_websocket("127.0.0.1", port, CONTROL_PATH, use_ssl=False, **options)


def write_daemon_info(home: Path, control_port: int, pid: int | None = None) -> None:
    info = {"pid": os.getpid() if pid is None else pid, "udp_port": 44996, "control_port": control_port, "started": 1.0}
    (home / "daemon.json").write_text(json.dumps(info))


@contextmanager
def daemon_in_thread(home: Path, handler=None):
    """A control server in its own thread and trio run, as the daemon would be; yields the handler."""
    home.mkdir(parents=True, exist_ok=True)
    token = ensure_token(home)
    handler = handler or ScriptedHandler()
    ready = threading.Event()
    stop: dict = {}

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            _, port = await start_server(nursery, handler, token)
            stop["token"], stop["scope"] = trio.lowlevel.current_trio_token(), nursery.cancel_scope
            write_daemon_info(home, port)
            ready.set()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(10), "the control server did not start"
    try:
        yield handler
    finally:
        trio.from_thread.run_sync(stop["scope"].cancel, trio_token=stop["token"])
        thread.join(10)
