"""A control-API client of a real daemon (what the TUI will be) sees the snapshot, then the events that
change it: the peer becoming reachable, an offer, commits, transfer progress with bytes and rate, the
pull that applied it and the folder's new head."""

import os
from pathlib import Path

import pytest
import trio

from ocsync_tui.control_client import open_daemon_connection
from tests.e2e.daemons import pair, wait_converged


async def collect_until(connection, seen: list[dict], done, timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        async for event in connection.events():
            seen.append(event)
            if done(seen):
                return


@pytest.mark.trio
async def test_a_client_sees_reachability_offers_commits_and_transfers(cluster, tmp_path: Path):
    alice, bob = cluster.device("alice"), cluster.device("bob")
    async with open_daemon_connection(bob.home) as connection:
        assert connection.snapshot["device"]["name"] == "bob"
        assert connection.snapshot["folders"] == [] and connection.snapshot["peers"] == []
        seen: list[dict] = []
        await trio.to_thread.run_sync(pair, alice, bob)
        docs = tmp_path / "alice-docs"
        docs.mkdir()
        (docs / "small.txt").write_text("hello")
        await trio.to_thread.run_sync(lambda: alice.ocsync("folder", "add", docs, "--name", "docs"))
        await trio.to_thread.run_sync(lambda: alice.ocsync("share", "docs", "--with", "bob"))
        await collect_until(connection, seen, lambda events: any(e["kind"] == "offer" for e in events))
        offer = next(e for e in seen if e["kind"] == "offer")
        assert offer["change"] == "added" and offer["offer"]["folder_name"] == "docs"
        assert any(e["kind"] == "peer" and e["peer"]["name"] == "alice" and e["peer"]["reachable"] for e in seen)

        target = tmp_path / "bob-docs"
        await trio.to_thread.run_sync(lambda: bob.ocsync("accept", "alice", "docs", "--path", target))
        big = os.urandom(40_000_000)  # long enough on loopback for progress reports (every 100 ms)
        (docs / "big.bin").write_bytes(big)

        def big_applied(events):
            return any(e["kind"] == "sync" and e["outcome"] == "applied" for e in events) and (target / "big.bin").exists()

        await collect_until(connection, seen, big_applied)
        await trio.to_thread.run_sync(lambda: wait_converged({alice: docs, bob: target}, expected={"small.txt": b"hello", "big.bin": big}))
        progress = [e for e in seen if e["kind"] == "transfer" and e["transfer"]["direction"] == "in"]
        assert progress, "transfer events came"
        assert progress[-1]["state"] == "done"
        assert any(e["transfer"]["done"] > 0 and e["transfer"]["rate_bps"] > 0 for e in progress if e["state"] == "running")
        folder_events = [e for e in seen if e["kind"] == "folder" and e["folder"]["name"] == "docs"]
        assert folder_events and folder_events[-1]["folder"]["head"] is not None

        (target / "reply.txt").write_text("from bob")
        await collect_until(connection, seen, lambda events: any(
            e["kind"] == "commit" and any(c["path"] == "reply.txt" for c in e["commits"]) for e in events))
