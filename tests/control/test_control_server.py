"""ControlServer over real websockets on 127.0.0.1: handshake, snapshot and events, commands, bad input."""

import json

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket

from ocsync_tui.engine import control
from ocsync_tui.engine.control import CloseCode

from .servers import ScriptedHandler, hello, raw_client, start_server


async def closed_with(socket) -> tuple[int, str]:
    """Read until the server closes the connection; its close code and reason."""
    with trio.fail_after(10):
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await socket.get_message()
    return closed.value.reason.code, closed.value.reason.reason


async def command(socket, request_id: int, name: str, args=None) -> dict:
    await socket.send_message(json.dumps({"type": "command", "id": request_id, "command": name, "args": args or {}}))
    with trio.fail_after(10):
        return json.loads(await socket.get_message())


@pytest.mark.trio
@pytest.mark.parametrize(
    ("first_message", "code", "reason_part"),
    [
        ({"type": "hello", "token": "cd" * 32, "version": 1}, CloseCode.BAD_TOKEN, "wrong or missing token"),
        ({"type": "hello", "version": 1}, CloseCode.BAD_TOKEN, "wrong or missing token"),
        ({"type": "hello", "token": "ab" * 31, "version": 1}, CloseCode.BAD_TOKEN, "wrong or missing token"),
        ({"type": "hello", "token": "ab" * 32, "version": 2}, CloseCode.UNSUPPORTED_VERSION, "speaks 1"),
        ({"type": "hello", "token": "ab" * 32, "version": True}, CloseCode.UNSUPPORTED_VERSION, "speaks 1"),
        ({"type": "command", "id": 1, "command": "status"}, CloseCode.BAD_HELLO, "first message must be"),
        ({"type": "hello", "token": "ab" * 32, "version": 1, "events": "yes"}, CloseCode.BAD_HELLO, '"events"'),
    ],
)
async def test_a_bad_hello_closes_the_connection_with_a_reason_and_sends_no_state(
    first_message, code, reason_part
) -> None:
    async with trio.open_nursery() as nursery:
        _, port = await start_server(nursery)
        async with raw_client(port) as socket:
            await socket.send_message(json.dumps(first_message))
            got_code, reason = await closed_with(socket)
        assert got_code == code
        assert reason_part in reason
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_client_that_sends_no_hello_is_closed_after_the_hello_timeout(monkeypatch) -> None:
    monkeypatch.setattr(control, "HELLO_TIMEOUT", 0.2)
    async with trio.open_nursery() as nursery:
        _, port = await start_server(nursery)
        async with raw_client(port) as socket:
            assert await closed_with(socket) == (CloseCode.BAD_HELLO, "no hello within 0.2 s")
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_another_path_is_rejected_over_http() -> None:
    async with trio.open_nursery() as nursery:
        _, port = await start_server(nursery)
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket("127.0.0.1", port, "/v2", use_ssl=False):
                pass
        assert rejected.value.status_code == 404
        assert b"version 1 at /v1" in rejected.value.body
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_snapshot_first_then_only_later_events_in_publish_order() -> None:
    handler = ScriptedHandler()
    async with trio.open_nursery() as nursery:
        server, port = await start_server(nursery, handler)
        server.publish({"kind": "commit", "n": -1})  # before anyone listens: nobody gets it
        handler.state = {"folders": [{"name": "docs"}], "peers": []}
        async with raw_client(port) as socket:
            snapshot = await hello(socket)
            assert snapshot == {"type": "snapshot", "version": 1, "state": {"folders": [{"name": "docs"}], "peers": []}}
            for n in range(200):
                server.publish({"kind": "transfer", "n": n})
            with trio.fail_after(10):
                received = [json.loads(await socket.get_message()) for _ in range(200)]
        assert received == [{"type": "event", "event": {"kind": "transfer", "n": n}} for n in range(200)]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_client_that_asks_for_no_events_gets_the_snapshot_and_replies_only() -> None:
    async with trio.open_nursery() as nursery:
        server, port = await start_server(nursery)
        async with raw_client(port) as socket:
            assert (await hello(socket, events=False))["type"] == "snapshot"
            assert server.subscriber_count == 0
            server.publish({"kind": "commit"})
            reply = await command(socket, 1, "status")
        assert reply == {"type": "result", "id": 1, "ok": True, "result": {"command": "status"}}
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("event", [{"folder": "x"}, {"kind": "reachability"}, {"kind": ["peer"]}])
def test_publish_refuses_an_event_of_no_documented_kind(event) -> None:
    server = control.ControlServer("ab" * 32, ScriptedHandler())
    with pytest.raises(ValueError, match="kind must be one of folder, peer, offer"):
        server.publish(event)


@pytest.mark.trio
async def test_commands_answer_with_results_and_clear_errors_and_the_server_survives_a_crash() -> None:
    handler = ScriptedHandler()
    async with trio.open_nursery() as nursery:
        _, port = await start_server(nursery, handler)
        async with raw_client(port) as socket:
            await hello(socket)
            assert await command(socket, 1, "peer.add", {"name": "bob", "device_id": "X"}) == {
                "type": "result", "id": 1, "ok": True, "result": {"name": "bob", "device_id": "X"},
            }
            assert await command(socket, 2, "peer.add", {"name": "taken"}) == {
                "type": "result", "id": 2, "ok": False, "error": "a peer named taken exists already; pick another name",
            }
            crashed = await command(socket, 3, "log", {"folder": "docs", "path": "a.txt"})
            assert crashed["ok"] is False and crashed["id"] == 3
            assert crashed["error"].startswith("internal error: RuntimeError: the engine tripped over two lines")
            assert "\n" not in crashed["error"]
            unserializable = await command(socket, 4, "offers")
            assert unserializable["ok"] is False and unserializable["error"].startswith("internal error: TypeError")
            unknown = await command(socket, 5, "reboot")
            assert unknown["ok"] is False and unknown["error"].startswith("unknown command 'reboot'")
            assert await command(socket, 6, "status") == {
                "type": "result", "id": 6, "ok": True, "result": {"command": "status"},
            }
        # The server still accepts new clients after all that.
        async with raw_client(port) as socket:
            assert (await hello(socket))["type"] == "snapshot"
        assert [name for name, _ in handler.calls] == ["peer.add", "peer.add", "log", "offers", "status"]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_malformed_messages_get_error_replies_and_the_connection_keeps_working() -> None:
    async with trio.open_nursery() as nursery:
        server, port = await start_server(nursery)
        async with raw_client(port) as socket:
            await hello(socket)
            bad_id = 'malformed command: "id" must be an integer'
            cases = [
                ("{not json", "malformed message: not JSON"),
                (b"\xff\xfe", "malformed message: not JSON"),
                ("[1, 2]", "malformed message: expected a JSON object"),
                ('{"type": "hello", "token": "x"}', "unknown message type 'hello'; only commands are accepted"),
                ('{"type": "command", "command": "status"}', bad_id),
                ('{"type": "command", "id": "7", "command": "status"}', bad_id),
                ('{"type": "command", "id": true, "command": "status"}', bad_id),
            ]
            for raw, error in cases:
                await socket.send_message(raw)
                with trio.fail_after(10):
                    assert json.loads(await socket.get_message()) == {"type": "error", "error": error}
            # With a readable id, the error is that command's result.
            await socket.send_message('{"type": "command", "id": 8, "command": "status", "args": [1]}')
            with trio.fail_after(10):
                assert json.loads(await socket.get_message()) == {
                    "type": "result", "id": 8, "ok": False,
                    "error": 'malformed command: "args" of status must be a JSON object',
                }
            assert (await command(socket, 9, "status"))["ok"] is True
            server.publish({"kind": "peer", "name": "bob"})
            with trio.fail_after(10):
                assert json.loads(await socket.get_message())["event"] == {"kind": "peer", "name": "bob"}
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_slow_command_holds_up_neither_events_nor_other_commands() -> None:
    handler = ScriptedHandler()
    async with trio.open_nursery() as nursery:
        server, port = await start_server(nursery, handler)
        async with raw_client(port) as socket:
            await hello(socket)
            await socket.send_message(json.dumps({"type": "command", "id": 1, "command": "sync", "args": {}}))
            server.publish({"kind": "sync", "state": "started"})
            with trio.fail_after(10):
                assert json.loads(await socket.get_message())["event"] == {"kind": "sync", "state": "started"}
            assert (await command(socket, 2, "status"))["id"] == 2
            handler.release_sync.set()
            with trio.fail_after(10):
                assert json.loads(await socket.get_message()) == {
                    "type": "result", "id": 1, "ok": True, "result": {"exchanges": []},
                }
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_command_finishes_even_when_its_client_goes_away() -> None:
    handler = ScriptedHandler()
    async with trio.open_nursery() as nursery:
        _, port = await start_server(nursery, handler)
        async with raw_client(port) as socket:
            await hello(socket)
            await socket.send_message(json.dumps({"type": "command", "id": 1, "command": "sync"}))
            with trio.fail_after(10):
                while not handler.calls:
                    await trio.sleep(0.01)
        handler.release_sync.set()
        with trio.fail_after(10):
            while not handler.finished:
                await trio.sleep(0.01)
        assert handler.finished == ["sync"]
        async with raw_client(port) as socket:
            assert (await hello(socket))["type"] == "snapshot"
        nursery.cancel_scope.cancel()


class BrokenSnapshot(ScriptedHandler):
    def snapshot(self) -> dict:
        raise KeyError("folders")


@pytest.mark.trio
async def test_a_failing_snapshot_closes_that_client_with_a_reason_and_the_server_lives_on() -> None:
    async with trio.open_nursery() as nursery:
        _, port = await start_server(nursery, BrokenSnapshot())
        for _ in range(2):
            async with raw_client(port) as socket:
                await socket.send_message(json.dumps({"type": "hello", "token": "ab" * 32, "version": 1}))
                code, reason = await closed_with(socket)
            assert code == CloseCode.INTERNAL_ERROR
            assert reason == "internal error: the daemon could not build its state"
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_client_that_stops_reading_is_dropped_without_slowing_publish_or_other_clients(monkeypatch) -> None:
    monkeypatch.setattr(control, "CLIENT_QUEUE_SIZE", 16)
    payload = "x" * (512 * 1024)
    big = 1 << 26
    async with trio.open_nursery() as nursery:
        server, port = await start_server(nursery)
        async with raw_client(port, max_message_size=big) as slow, raw_client(port, max_message_size=big) as fast:
            await hello(slow)
            await hello(fast)
            assert server.subscriber_count == 2
            fast_seen = []
            longest_publish = 0.0
            published = 0
            with trio.fail_after(60):
                # Lockstep with the fast client, so only the slow one can fall behind.
                while server.subscriber_count == 2:
                    assert published < 1000, "the slow client was never dropped"
                    started = trio.current_time()
                    server.publish({"kind": "transfer", "n": published, "padding": payload})
                    longest_publish = max(longest_publish, trio.current_time() - started)
                    published += 1
                    fast_seen.append(json.loads(await fast.get_message())["event"]["n"])
            assert longest_publish < 0.1
            server.publish({"kind": "transfer", "n": published, "padding": ""})
            with trio.fail_after(10):
                fast_seen.append(json.loads(await fast.get_message())["event"]["n"])
            assert fast_seen == list(range(published + 1))

            # The slow client still gets what was sent before the drop, in order, then the reason.
            slow_seen = []
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                while True:
                    slow_seen.append(json.loads(await slow.get_message())["event"]["n"])
            assert slow_seen == list(range(len(slow_seen)))
            assert len(slow_seen) < published
            assert closed.value.reason.code == CloseCode.TOO_SLOW
            assert closed.value.reason.reason.startswith("too slow: 16 messages were waiting")
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_an_oversized_client_message_closes_that_connection_only() -> None:
    async with trio.open_nursery() as nursery:
        _, port = await start_server(nursery)
        async with raw_client(port) as socket:
            await hello(socket)
            oversized = json.dumps({"type": "command", "id": 1, "command": "status", "x": "y" * (1 << 21)})
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                await socket.send_message(oversized)  # the server may close while this is still being sent
                while True:
                    await socket.get_message()
        assert closed.value.reason.code == 1009
        async with raw_client(port) as socket:
            await hello(socket)
            assert (await command(socket, 1, "status"))["ok"] is True
        nursery.cancel_scope.cancel()
