"""The client side of the daemon's control API (docs/control-api.md), for the CLI and the TUI.

The CLI uses `connect_to_daemon(home)`: None when no daemon runs on that home, else a `DaemonClient`
whose calls are synchronous (one short connection each). The TUI, itself trio code, keeps one connection
open with `open_daemon_connection(home)`: the snapshot, commands, and the stream of events.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket,
)

from ocsync_tui.engine.control import CONTROL_PATH, PROTOCOL_VERSION, read_token
from ocsync_tui.errors import OcsyncError

log = logging.getLogger("ocsync.control_client")

DAEMON_INFO_NAME = "daemon.json"
CONNECT_TIMEOUT = 5.0
# Snapshots and file histories can be large; the daemon is local and trusted once authenticated.
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
EVENT_BUFFER = 1000


class DaemonNotRunningError(OcsyncError):
    pass


class DaemonConnectionError(OcsyncError):
    """The daemon refused the connection, did not answer, or closed it."""


class DaemonCommandError(OcsyncError):
    """The daemon ran the command and reports that it failed; the message is the daemon's."""


@dataclass(frozen=True)
class DaemonInfo:
    pid: int
    udp_port: int
    control_port: int
    started: float


def read_daemon_info(home: Path) -> DaemonInfo | None:
    """What HOME/daemon.json says, or None without one. Whether the daemon still runs is not checked."""
    path = home / DAEMON_INFO_NAME
    try:
        info = json.loads(path.read_text())
        daemon = DaemonInfo(
            pid=int(info["pid"]),
            udp_port=int(info["udp_port"]),
            control_port=int(info["control_port"]),
            started=float(info["started"]),
        )
        if daemon.pid <= 0 or not 0 < daemon.control_port < 65536:
            raise ValueError("out of range")
        return daemon
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise DaemonConnectionError(
            f"{path} is damaged; if no daemon runs on {home}, remove it and try again"
        ) from None


class DaemonConnection:
    """One authenticated connection to the daemon; made by `open_daemon_connection`."""

    def __init__(self, socket: WebSocketConnection, snapshot: dict, wants_events: bool) -> None:
        self.snapshot = snapshot
        self._socket = socket
        self._wants_events = wants_events
        self._request_ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict]] = {}
        self._events_send, self._events_receive = trio.open_memory_channel[dict](EVENT_BUFFER)
        self._lost: DaemonConnectionError | None = None

    async def call(self, command: str, /, **args: Any) -> Any:
        """Run `command` in the daemon and return its result; DaemonCommandError with its message if it fails."""
        if self._lost is not None:
            raise self._lost
        request_id = next(self._request_ids)
        reply_send, reply_receive = trio.open_memory_channel[dict](1)
        self._waiting[request_id] = reply_send
        try:
            message = {"type": "command", "id": request_id, "command": command, "args": args}
            try:
                await self._socket.send_message(json.dumps(message, default=_path_text))
            except ConnectionClosed as closed:
                raise _lost_connection(closed) from None
            try:
                reply = await reply_receive.receive()
            except trio.EndOfChannel:
                assert self._lost is not None
                raise self._lost from None
        finally:
            del self._waiting[request_id]
        if not reply.get("ok"):
            raise DaemonCommandError(str(reply.get("error") or f"{command} failed without a reason"))
        return reply.get("result")

    async def events(self) -> AsyncIterator[dict]:
        """Every event after the snapshot, in order. Ends by raising DaemonConnectionError when the
        connection is lost (a daemon that stops, or drops this client because events were not read)."""
        if not self._wants_events:
            raise RuntimeError("this connection was opened with events=False")
        async for event in self._events_receive:
            yield event
        assert self._lost is not None
        raise self._lost

    async def _read(self) -> None:
        """The connection's only reader: results go to their callers, events to the event stream."""
        try:
            while True:
                message = json.loads(await self._socket.get_message())
                kind = message.get("type")
                if kind == "result" and message.get("id") in self._waiting:
                    self._waiting[message["id"]].send_nowait(message)
                elif kind == "event" and self._wants_events:
                    # Waiting here when the TUI lags makes the daemon drop us, which the TUI then sees.
                    await self._events_send.send(message["event"])
                elif kind == "error":
                    log.warning("the daemon could not read a message of ours: %s", message.get("error"))
        except ConnectionClosed as closed:
            self._lost = _lost_connection(closed)
        except (ValueError, AttributeError, KeyError, TypeError):
            self._lost = DaemonConnectionError("the daemon sent a message this client cannot read")
        finally:
            if self._lost is None:
                self._lost = DaemonConnectionError("the connection to the daemon was closed")
            self._events_send.close()
            for reply_send in self._waiting.values():
                reply_send.close()


def _path_text(value: Any) -> str:
    """Paths travel as their text, so callers can pass the Path objects they hold."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"a command argument must be JSON or a path, not {type(value).__name__}")


def _lost_connection(closed: ConnectionClosed) -> DaemonConnectionError:
    reason = closed.reason
    if reason is not None and reason.reason:
        return DaemonConnectionError(f"the daemon closed the connection: {reason.reason}")
    return DaemonConnectionError("the connection to the daemon was lost (did the daemon stop?)")


async def _handshake(socket: WebSocketConnection, token: str, wants_events: bool) -> dict:
    """Send the hello and return the state snapshot that answers it."""
    try:
        await socket.send_message(
            json.dumps({"type": "hello", "token": token, "version": PROTOCOL_VERSION, "events": wants_events})
        )
        with trio.fail_after(CONNECT_TIMEOUT):
            first = json.loads(await socket.get_message())
    except ConnectionClosed as closed:
        raise _lost_connection(closed) from None
    except trio.TooSlowError:
        raise DaemonConnectionError(f"the daemon did not answer within {CONNECT_TIMEOUT:.0f} s") from None
    except ValueError:
        raise DaemonConnectionError("the daemon's first message is not JSON") from None
    if not isinstance(first, dict) or first.get("type") != "snapshot" or not isinstance(first.get("state"), dict):
        raise DaemonConnectionError("the daemon did not start with a state snapshot")
    return first["state"]


@asynccontextmanager
async def _open_port(port: int, token: str, *, wants_events: bool) -> AsyncIterator[DaemonConnection]:
    try:
        async with open_websocket(
            "127.0.0.1",
            port,
            CONTROL_PATH,
            use_ssl=False,
            max_message_size=MAX_MESSAGE_SIZE,
            connect_timeout=CONNECT_TIMEOUT,
        ) as socket:
            connection = DaemonConnection(socket, await _handshake(socket, token, wants_events), wants_events)
            async with _single_errors(), trio.open_nursery() as nursery:
                nursery.start_soon(connection._read)
                try:
                    yield connection
                finally:
                    nursery.cancel_scope.cancel()
    except ConnectionTimeout:
        raise DaemonConnectionError(
            f"the daemon on port {port} did not answer within {CONNECT_TIMEOUT:.0f} s"
        ) from None
    except DisconnectionTimeout:
        pass  # everything was done; the daemon was only slow to confirm the close
    except ConnectionRejected as rejected:
        raise DaemonConnectionError(
            f"what answers on control port {port} does not serve control API version {PROTOCOL_VERSION} "
            f"(HTTP {rejected.status_code}); are the daemon and this client different releases?"
        ) from None
    except HandshakeError as error:
        # trio reports a refused (or unreachable) connect as an OSError: nothing listens there.
        if isinstance(error.__cause__, OSError):
            raise DaemonNotRunningError(f"nothing answers on control port {port}") from None
        raise DaemonConnectionError(f"cannot connect to the daemon on port {port}: {error!r}") from None


@asynccontextmanager
async def _single_errors() -> AsyncIterator[None]:
    """Let the one real error out of a nursery's exception group, so callers can catch it by type."""
    try:
        yield
    except BaseExceptionGroup as group:
        real = [error for error in group.exceptions if not isinstance(error, trio.Cancelled)]
        if len(real) == 1 and not isinstance(real[0], BaseExceptionGroup):
            raise real[0] from None
        raise


@asynccontextmanager
async def open_daemon_connection(home: Path, *, events: bool = True) -> AsyncIterator[DaemonConnection]:
    """A connection to the daemon running on `home`; DaemonNotRunningError when none runs there.

    Iterate `events()` in a task of its own: while events wait unread, replies wait behind them, and
    after 1000 the daemon drops the connection. With events=False the daemon sends no events (for a
    caller that only runs commands).
    """
    info = read_daemon_info(home)
    if info is None:
        raise DaemonNotRunningError(f"no daemon is running on {home}; start one with `ocsync daemon`")
    async with _open_port(info.control_port, read_token(home), wants_events=events) as connection:
        yield connection


class DaemonClient:
    """Synchronous access for the CLI: each call is one short connection (a trio.run of its own)."""

    def __init__(self, home: Path, port: int, token: str) -> None:
        self.home = home
        self.port = port
        self._token = token

    def call(self, command: str, /, **args: Any) -> Any:
        """Run `command` in the daemon; raise DaemonCommandError (an OcsyncError) with its message if it fails."""
        return trio.run(self._call, command, args)

    def snapshot(self) -> dict:
        """The daemon's whole state, as a fresh snapshot."""
        return trio.run(self._snapshot)

    async def _call(self, command: str, args: dict) -> Any:
        async with _open_port(self.port, self._token, wants_events=False) as connection:
            return await connection.call(command, **args)

    async def _snapshot(self) -> dict:
        async with _open_port(self.port, self._token, wants_events=False) as connection:
            return connection.snapshot


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def connect_to_daemon(home: Path) -> DaemonClient | None:
    """A client of the daemon running on `home`, or None if none runs (no daemon.json, or a stale one).

    A daemon that answers but refuses us (a wrong token) raises DaemonConnectionError rather than
    returning None: the CLI must not edit the store beside a running daemon.
    """
    info = read_daemon_info(home)
    if info is None or not _process_exists(info.pid):
        return None
    client = DaemonClient(home, info.control_port, read_token(home))
    try:
        client.snapshot()
    except DaemonNotRunningError:
        return None
    return client
