"""The daemon's control API: JSON messages over a WebSocket on 127.0.0.1, for the TUI and the CLI.

docs/control-api.md is the schema. A client proves it may talk to the daemon with the token in
HOME/control.token (a file only the user can read), gets one snapshot of the whole state, then every event
the engine publishes, and may send commands at any time. The engine never waits for a client: each one has
a bounded queue, and a client that lets it fill up is disconnected (it reconnects for a fresh snapshot).
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import os
import secrets
import stat
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from ocsync_tui.errors import OcsyncError
from ocsync_tui.private_files import private_file_problem

log = logging.getLogger("ocsync.control")

PROTOCOL_VERSION = 1
CONTROL_PATH = f"/v{PROTOCOL_VERSION}"
TOKEN_NAME = "control.token"
HELLO_TIMEOUT = 5.0
CLIENT_QUEUE_SIZE = 1000
COMMANDS_IN_FLIGHT_PER_CLIENT = 8
# How long closing may take: the message a dropped client is being sent may finish, so that the close
# frame and its reason follow on a clean stream; and a client gets this long to answer the close.
_CLOSE_GRACE = 2.0

COMMANDS = (
    "status",
    "folder.add",
    "folder.list",
    "folder.rm",
    "peer.add",
    "peer.list",
    "peer.rm",
    "peer.confirm",
    "share",
    "unshare",
    "offers",
    "accept",
    "decline",
    "schedule.set",
    "schedule.clear",
    "schedule.show",
    "sync",
    "commit",
    "bundle.apply",
    "restore",
    "log",
)

EVENT_KINDS = ("folder", "peer", "offer", "pending_device", "schedule", "transfer", "commit", "conflict", "sync")


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (4000-4999 are reserved for applications)."""

    NORMAL = 1000
    INTERNAL_ERROR = 1011
    BAD_HELLO = 4000
    BAD_TOKEN = 4001
    UNSUPPORTED_VERSION = 4002
    TOO_SLOW = 4003


class ControlTokenError(OcsyncError):
    pass


class ControlHandler(Protocol):
    """What the engine gives the server: its state for a new client, and the commands' implementation."""

    def snapshot(self) -> dict: ...

    async def handle(self, command: str, args: dict) -> Any: ...


def _check_private(path: Path, mode: int) -> None:
    problem = private_file_problem(path, mode, "the control token")
    if problem is not None:
        hint = "" if stat.S_ISREG(mode) else "; remove it and start the daemon again"
        raise ControlTokenError(problem + hint)


def read_token(home: Path) -> str:
    """The token in HOME/control.token; ControlTokenError if it is missing, shared or damaged."""
    path = home / TOKEN_NAME
    try:
        # Non-blocking, so a FIFO planted in its place cannot hang the daemon before the check.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            _check_private(path, os.fstat(handle.fileno()).st_mode)
            text = handle.read(1024).decode("ascii", "replace").strip()
    except FileNotFoundError:
        raise ControlTokenError(f"{path} is missing; the daemon creates it when it starts") from None
    except OSError as error:
        raise ControlTokenError(f"cannot read {path}: {error.strerror}") from None
    if len(text) < 32 or any(char not in "0123456789abcdef" for char in text):
        raise ControlTokenError(f"{path} is damaged (expected a hex token); remove it and start the daemon again")
    return text


def ensure_token(home: Path) -> str:
    """Read HOME/control.token, creating it (mode 0600, atomically) with a fresh random token if missing."""
    path = home / TOKEN_NAME
    if not path.exists():
        temporary = home / f".{TOKEN_NAME}.{os.getpid()}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            # A hard link never replaces an existing file: if another process created the token
            # meanwhile, both end up using that one.
            os.link(temporary, path)
        except FileExistsError:
            pass
        except OSError as error:
            raise ControlTokenError(f"cannot create {path}: {error.strerror}") from None
        finally:
            try:
                os.unlink(temporary)
            except OSError as error:
                if error.errno != errno.ENOENT:
                    raise
    return read_token(home)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _close_reason(text: str) -> str:
    """A close frame holds at most 123 bytes of reason."""
    encoded = text.encode("utf-8")
    return text if len(encoded) <= 123 else encoded[:120].decode("utf-8", "ignore") + "..."


class _Client:
    """One authenticated connection: its outgoing queue and how it is to be closed."""

    def __init__(self, socket: WebSocketConnection) -> None:
        self.socket = socket
        self.outbox_send, self.outbox = trio.open_memory_channel[str](CLIENT_QUEUE_SIZE)
        self.close_code = CloseCode.NORMAL
        self.close_reason: str | None = None
        self.send_scope: trio.CancelScope | None = None
        self.commands_in_flight = trio.Semaphore(COMMANDS_IN_FLIGHT_PER_CLIENT)

    def disconnect(self, code: CloseCode, reason: str) -> None:
        """Stop after the message being sent (if any), then close with `reason`. Never blocks."""
        if self.close_reason is not None:
            return
        self.close_code, self.close_reason = code, reason
        self.outbox_send.close()
        if self.send_scope is not None:
            self.send_scope.deadline = min(self.send_scope.deadline, trio.current_time() + _CLOSE_GRACE)


class ControlServer:
    """The control API for one daemon. `await nursery.start(server.run)` returns the bound port."""

    def __init__(self, token: str, handler: ControlHandler, host: str = "127.0.0.1", *, port: int = 0) -> None:
        self._token = token.encode("ascii")
        self._handler = handler
        self._host = host
        self._port = port
        self._subscribers: set[_Client] = set()
        self._commands: trio.Nursery | None = None

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            # Commands run here, not under their connection: one that started finishes even if its
            # client goes away (a CLI interrupted after sending `peer.add` still added the peer).
            self._commands = nursery
            server = await nursery.start(serve_websocket, self._serve_request, self._host, self._port, None)
            log.info("control API listening on %s:%d%s", self._host, server.port, CONTROL_PATH)
            task_status.started(server.port)

    def publish(self, event: dict) -> None:
        """Queue `event` for every subscribed client; call from the trio thread. Never blocks.

        A client whose queue is full is disconnected instead: it fell behind, and a client that misses
        events would show a wrong state, so it must reconnect for a fresh snapshot.
        """
        if event.get("kind") not in EVENT_KINDS:
            raise ValueError(f"an event's kind must be one of {', '.join(EVENT_KINDS)}: {event!r}")
        message = json.dumps({"type": "event", "event": event})
        for client in list(self._subscribers):
            try:
                client.outbox_send.send_nowait(message)
            except trio.WouldBlock:
                self._subscribers.discard(client)
                log.warning("disconnecting a control client that fell %d messages behind", CLIENT_QUEUE_SIZE)
                client.disconnect(
                    CloseCode.TOO_SLOW,
                    f"too slow: {CLIENT_QUEUE_SIZE} messages were waiting; reconnect for a fresh snapshot",
                )

    async def _serve_request(self, request: WebSocketRequest) -> None:
        # An exception escaping here would end trio-websocket's server, and with it the daemon.
        try:
            await self._serve(request)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("a control connection failed")

    async def _serve(self, request: WebSocketRequest) -> None:
        if request.path != CONTROL_PATH:
            body = f"this daemon serves control API version {PROTOCOL_VERSION} at {CONTROL_PATH}\n"
            await request.reject(404, body=body.encode())
            return
        socket = await request.accept()
        refusal, wants_events = await self._authenticate(socket)
        if refusal is not None:
            log.info("refused a control client: %s", refusal[1])
            await _close(socket, *refusal)
            return
        client = _Client(socket)
        try:
            state = json.dumps({"type": "snapshot", "version": PROTOCOL_VERSION, "state": self._handler.snapshot()})
        except Exception:
            log.exception("the daemon could not build its state snapshot")
            await _close(socket, CloseCode.INTERNAL_ERROR, "internal error: the daemon could not build its state")
            return
        # Subscribing in the same step as the snapshot (no checkpoint between) means every event
        # published after the state was taken reaches this client, and none from before it.
        client.outbox_send.send_nowait(state)
        if wants_events:
            self._subscribers.add(client)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive_loop, client, nursery.cancel_scope)
                await self._send_loop(client)
                nursery.cancel_scope.cancel()
        finally:
            self._subscribers.discard(client)
            # Replies of commands still running have nowhere to go: their send fails at once.
            client.outbox.close()
        await _close(socket, client.close_code, client.close_reason)

    async def _authenticate(self, socket: WebSocketConnection) -> tuple[tuple[CloseCode, str] | None, bool]:
        """(refusal, wants_events): refusal is None when the client sent a valid hello in time."""
        with trio.move_on_after(HELLO_TIMEOUT) as waiting:
            raw = await socket.get_message()
        if waiting.cancelled_caught:
            return (CloseCode.BAD_HELLO, f"no hello within {HELLO_TIMEOUT:g} s"), False
        try:
            hello = json.loads(raw)
        except ValueError:
            hello = None
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            expected = '{"type": "hello", "token": ..., "version": 1}'
            return (CloseCode.BAD_HELLO, f"the first message must be {expected}"), False
        if not _is_integer(hello.get("version")) or hello["version"] != PROTOCOL_VERSION:
            return (
                CloseCode.UNSUPPORTED_VERSION,
                f"unsupported control API version {hello.get('version')!r}; this daemon speaks {PROTOCOL_VERSION}",
            ), False
        token = hello.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode("utf-8"), self._token):
            return (CloseCode.BAD_TOKEN, f"wrong or missing token: use the one in HOME/{TOKEN_NAME}"), False
        wants_events = hello.get("events", True)
        if not isinstance(wants_events, bool):
            return (CloseCode.BAD_HELLO, '"events" in the hello must be true or false'), False
        return None, wants_events

    async def _send_loop(self, client: _Client) -> None:
        """The connection's only writer: snapshot, events and replies in the order they were queued."""
        async for message in client.outbox:
            if client.close_reason is not None:
                return
            with trio.CancelScope() as client.send_scope:
                try:
                    await client.socket.send_message(message)
                except ConnectionClosed:
                    return
            client.send_scope = None
            if client.close_reason is not None:
                return

    async def _receive_loop(self, client: _Client, connection_scope: trio.CancelScope) -> None:
        assert self._commands is not None
        try:
            while True:
                raw = await client.socket.get_message()
                await client.commands_in_flight.acquire()
                self._commands.start_soon(self._answer, client, raw)
        except ConnectionClosed:
            connection_scope.cancel()

    async def _answer(self, client: _Client, raw: str | bytes) -> None:
        try:
            reply = await self._reply_to(raw)
        finally:
            client.commands_in_flight.release()
        try:
            await client.outbox_send.send(reply)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the client is being disconnected; nobody will read the reply

    async def _reply_to(self, raw: str | bytes) -> str:
        """The serialized reply to one client message; every failure becomes an error reply."""
        parsed = _parse_command(raw)
        if isinstance(parsed, dict):
            return json.dumps(parsed)
        request_id, command, args = parsed
        try:
            result = await self._handler.handle(command, args)
            return json.dumps({"type": "result", "id": request_id, "ok": True, "result": result})
        except OcsyncError as error:
            return json.dumps(_failure(request_id, _one_line(str(error))))
        except Exception as error:
            log.exception("control command %s %r failed", command, args)
            detail = _one_line(f"{type(error).__name__}: {error}")
            return json.dumps(_failure(request_id, f"internal error: {detail} (the daemon's log has the details)"))


def _parse_command(raw: str | bytes) -> tuple[int, str, dict] | dict:
    """(id, command, args) of a well-formed command, else the error reply to send instead."""
    try:
        message = json.loads(raw)
    except ValueError:
        return {"type": "error", "error": "malformed message: not JSON"}
    if not isinstance(message, dict):
        return {"type": "error", "error": "malformed message: expected a JSON object"}
    if message.get("type") != "command":
        return {"type": "error", "error": f"unknown message type {message.get('type')!r}; only commands are accepted"}
    request_id = message.get("id")
    if not _is_integer(request_id):
        return {"type": "error", "error": 'malformed command: "id" must be an integer'}
    command, args = message.get("command"), message.get("args", {})
    if command not in COMMANDS:
        return _failure(request_id, f"unknown command {command!r}; this daemon knows {', '.join(COMMANDS)}")
    if not isinstance(args, dict):
        return _failure(request_id, f'malformed command: "args" of {command} must be a JSON object')
    return request_id, command, args


async def _close(socket: WebSocketConnection, code: CloseCode, reason: str | None) -> None:
    """Close with `reason`, without waiting long for a client that does not answer the close."""
    with trio.move_on_after(_CLOSE_GRACE):
        await socket.aclose(code, reason and _close_reason(reason))


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _failure(request_id: int, error: str) -> dict:
    return {"type": "result", "id": request_id, "ok": False, "error": error}
