"""First contact by address alone: each side knows only the other's address, so each peer stays pending
(no offers, no folder data) until the user confirms the key it presented with `ocsync peer confirm`."""

import time
from pathlib import Path

from ocsync_tui.store.database import open_store
from tests.e2e.daemons import (
    LOOPBACK,
    check_repository,
    wait_converged,
    wait_for_offer,
    wait_until,
)


def pending_key(device, peer_name: str) -> bytes | None:
    """The key `peer_name` presented to `device`, as its daemon recorded it (read beside it: WAL)."""
    with open_store(device.home) as store:
        return store.peer(peer_name).pending_key


def test_a_peer_added_by_address_alone_syncs_only_after_confirmation(cluster, tmp_path: Path) -> None:
    alice, bob = cluster.device("alice"), cluster.device("bob")
    stranger = cluster.device("stranger", start=False)
    alice.ocsync("peer", "add", "bob", "--address", f"{LOOPBACK}:{bob.udp_port}")
    bob.ocsync("peer", "add", "alice", "--address", f"{LOOPBACK}:{alice.udp_port}")
    seed = tmp_path / "alice-docs"
    seed.mkdir()
    (seed / "secret.txt").write_bytes(b"only for a confirmed bob\n")
    alice.ocsync("folder", "add", seed, "--name", "docs")

    wait_until(lambda: pending_key(alice, "bob") and pending_key(bob, "alice"),
               "both daemons to record the key the other presented (introduction)", cluster, timeout=30)
    # Sharing with a pending peer may be refused or deferred; either way bob hears of no folder yet.
    early_share = alice.ocsync("share", "docs", "--with", "bob", check=False)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert "docs" not in bob.ocsync("offers").stdout, "an offer from an unconfirmed peer was recorded"
        time.sleep(0.3)

    wrong = alice.ocsync("peer", "confirm", "bob", "--id", stranger.device_id, check=False)
    assert wrong.code != 0, f"a device ID that does not match the presented key was accepted:\n{wrong.describe()}"
    assert len(wrong.stderr.strip().splitlines()) == 1, f"not one clear line:\n{wrong.describe()}"

    alice.ocsync("peer", "confirm", "bob", "--id", bob.device_id)
    bob.ocsync("peer", "confirm", "alice", "--id", alice.device_id)
    if early_share.code != 0:
        alice.ocsync("share", "docs", "--with", "bob")
    wait_for_offer(bob, alice, "docs")
    bob_folder = tmp_path / "bob-docs"
    bob_folder.mkdir()
    bob.ocsync("accept", "alice", "docs", "--path", bob_folder)
    paths = {alice: seed, bob: bob_folder}
    wait_converged(paths, expected={"secret.txt": b"only for a confirmed bob\n"})
    (bob_folder / "reply.txt").write_bytes(b"thanks\n")
    wait_converged(paths, expected={"secret.txt": b"only for a confirmed bob\n", "reply.txt": b"thanks\n"})
    for folder in paths.values():
        check_repository(folder)
