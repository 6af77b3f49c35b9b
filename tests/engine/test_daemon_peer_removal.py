"""Removing a peer in the middle of an exchange with it stops the exchange, not the daemon."""

import os
import time
from pathlib import Path

from tests.e2e.daemons import pair, share_folder, wait_converged, wait_for_offer


def test_a_peer_removed_mid_exchange_leaves_the_daemon_running(cluster, tmp_path: Path) -> None:
    alice, bob = cluster.device("alice"), cluster.device("bob")
    pair(alice, bob)
    paths = share_folder(alice, "docs", tmp_path / "alice-docs", bob)
    for index in range(20):
        (paths[alice] / f"file{index}.bin").write_bytes(os.urandom(500_000))
    time.sleep(0.3)  # the first commits are out and pulls are under way
    alice.ocsync("peer", "rm", "bob")
    bob.ocsync("peer", "rm", "alice")
    time.sleep(2.0)
    assert alice.running and bob.running, cluster.logs()
    assert "bob" not in alice.ocsync("peer", "list").stdout
    # Paired again (bob accepts the offer into the copy it holds), they finish the job.
    (paths[alice] / "after.txt").write_bytes(b"written while they were strangers")
    pair(alice, bob)
    alice.ocsync("share", "docs", "--with", "bob")
    wait_for_offer(bob, alice, "docs")
    bob.ocsync("accept", "alice", "docs")
    wait_converged({alice: paths[alice], bob: paths[bob]})
    assert (paths[bob] / "after.txt").read_bytes() == b"written while they were strangers"
