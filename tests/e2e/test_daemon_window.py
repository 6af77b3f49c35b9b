"""Sync windows on real daemons: a closed window carries no folder data (bytes counted by a forwarder
between the two daemons), local commits go on, and the window's opening syncs.

The daemons read the time of day from a file (OCSYNC_TIME_OF_DAY_FILE), so the test moves it."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.daemons import (
    assert_stays,
    check_repository,
    pair,
    read_tree,
    share_folder,
    wait_converged,
    wait_until,
)


pytestmark = pytest.mark.slow


# Keepalives, handshakes and path-MTU probes (up to ~64 KB datagrams on loopback) may cross a closed
# window; an 8 MB file of random bytes may not, not even in part.
FILE_SIZE = 8_000_000
CLOSED_WINDOW_ALLOWANCE = 400_000


def committed(root: Path, path: str) -> bool:
    listing = subprocess.run(["git", "-C", str(root), "ls-tree", "--name-only", "HEAD", path],
                             capture_output=True, text=True)
    return listing.stdout.strip() == path


def test_a_closed_window_carries_no_folder_data_and_its_opening_syncs(cluster, tmp_path: Path) -> None:
    alice = cluster.device("alice", time_of_day="22:00")
    bob = cluster.device("bob", time_of_day="22:00")
    link = cluster.forwarder(alice, bob)
    pair(alice, bob, a_reaches_b=link.near_port, b_reaches_a=link.far_port)
    seed = tmp_path / "alice-photos"
    seed.mkdir()
    (seed / "first.txt").write_bytes(b"synced before the window closed\n")
    paths = share_folder(alice, "photos", seed, bob)
    wait_converged(paths, expected={"first.txt": b"synced before the window closed\n"})

    # A window across midnight, closed at 22:00 on both devices.
    for device in (alice, bob):
        device.ocsync("schedule", "set", "--from", "23:30", "--to", "01:00")
    time.sleep(0.5)
    before = link.bytes_forwarded()
    big = os.urandom(FILE_SIZE)
    (paths[alice] / "big.bin").write_bytes(big)
    (paths[bob] / "from-bob.txt").write_bytes(b"bob, while closed\n")
    wait_until(lambda: committed(paths[alice], "big.bin") and committed(paths[bob], "from-bob.txt"),
               "both devices to commit their local change while the window is closed", cluster, timeout=15)
    assert_stays(
        paths,
        {alice: read_tree(paths[alice]), bob: read_tree(paths[bob])},
        seconds=4,
        what="a change crossed a closed window",
    )
    crossed = link.bytes_forwarded() - before
    print(f"{crossed} bytes crossed the link while the window was closed")
    assert crossed < CLOSED_WINDOW_ALLOWANCE, f"{crossed} bytes crossed the link while the window was closed"

    for device in (alice, bob):
        device.set_time_of_day("00:15")
    wait_converged(
        paths,
        expected={"first.txt": b"synced before the window closed\n", "big.bin": big,
                  "from-bob.txt": b"bob, while closed\n"},
        timeout=30,
    )
    assert link.bytes_forwarded() - before > len(big), "the forwarder did not see the file cross: it counts wrong"
    for folder in paths.values():
        check_repository(folder)
