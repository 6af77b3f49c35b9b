"""Daemons killed with SIGKILL mid-transfer, mid-commit and mid-apply restart and converge with nothing
lost; a peer that was offline for a while catches up."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.daemons import (
    author_email,
    check_repository,
    commit_authors,
    pair,
    share_folder,
    wait_converged,
    wait_until,
)

pytestmark = pytest.mark.slow


def small_files(prefix: str, count: int) -> dict[str, bytes]:
    return {f"{prefix}/{index // 100:02}/file{index:04}.txt": b"%s %d\n" % (prefix.encode(), index) * 4
            for index in range(count)}


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def count_files(root: Path, subdirectory: str) -> int:
    total = 0
    for _, _, files in os.walk(root / subdirectory):
        total += len(files)
    return total


def count_committed(root: Path, subdirectory: str) -> int:
    listing = subprocess.run(["git", "-C", str(root), "ls-tree", "-r", "--name-only", "HEAD", subdirectory],
                             capture_output=True, text=True)
    return len(listing.stdout.split())


@pytest.mark.parametrize("killed", ["receiver", "giver"])
def test_killed_mid_transfer_resumes_and_converges(cluster, tmp_path: Path, killed: str) -> None:
    alice, bob = cluster.device("alice"), cluster.device("bob")
    # 4 MB/s each way, so a 12 MB file takes ~3 s to cross and a daemon can be killed in the middle.
    link = cluster.forwarder(alice, bob, rate=4_000_000)
    pair(alice, bob, a_reaches_b=link.near_port, b_reaches_a=link.far_port)
    paths = share_folder(alice, "media", tmp_path / "alice-media", bob)
    wait_converged(paths, expected={})

    big = os.urandom(12_000_000)
    before = link.bytes_forwarded()
    (paths[alice] / "big.bin").write_bytes(big)
    # Two thirds across: by then bob's partial file has recorded at least one checkpoint (every
    # second or 8 MB, ocsync_tui/net/transfer.py), so a resumed transfer need not send it all again.
    wait_until(lambda: link.bytes_forwarded() - before > 8_000_000, "8 MB of the bundle to cross the link",
               cluster, timeout=30, interval=0.02)
    victim = bob if killed == "receiver" else alice
    victim.kill()
    assert not (paths[bob] / "big.bin").exists(), "the kill came too late: the file had already arrived"
    killed_at = link.bytes_forwarded() - before
    time.sleep(1.0)
    victim.start()
    wait_converged(paths, expected={"big.bin": big}, timeout=60)
    after_the_kill = link.bytes_forwarded() - before - killed_at
    print(f"{victim.name} killed after {killed_at} bytes crossed; {after_the_kill} bytes after it, "
          f"for a {len(big)}-byte file")
    assert after_the_kill < 0.85 * len(big), (
        f"{after_the_kill} bytes crossed after {victim.name} ({killed}) restarted, for a {len(big)}-byte file "
        f"({killed_at} before the kill): the transfer started over instead of resuming by hash"
    )
    for folder in paths.values():
        check_repository(folder)


def test_killed_mid_commit_commits_everything_at_restart(cluster, tmp_path: Path) -> None:
    alice, bob = cluster.device("alice"), cluster.device("bob")
    pair(alice, bob)
    paths = share_folder(alice, "burst", tmp_path / "alice-burst", bob)
    wait_converged(paths, expected={})

    pack_directory = paths[alice] / ".git" / "objects" / "pack"
    packs_before = set(os.listdir(pack_directory)) if pack_directory.exists() else set()
    files = small_files("unzipped", 2000)
    write_files(paths[alice], files)
    # Kill as soon as alice starts writing a pack (or after 2 s, wherever she is by then).
    written = time.monotonic()
    pack_started = False
    while not pack_started and time.monotonic() < written + 2.0:
        pack_started = pack_directory.exists() and bool(set(os.listdir(pack_directory)) - packs_before)
        time.sleep(0.003)
    alice.kill()
    print(f"alice killed {time.monotonic() - written:.3f} s after the burst, pack started: {pack_started}, "
          f"committed by then: {count_committed(paths[alice], 'unzipped')} of {len(files)} files")
    alice.start()
    wait_converged(paths, expected=files, timeout=60)
    for folder in paths.values():
        check_repository(folder)
        assert commit_authors(folder, "unzipped") == {author_email(alice)}


def test_killed_mid_apply_finishes_the_apply_and_keeps_local_changes(cluster, tmp_path: Path) -> None:
    alice, bob = cluster.device("alice"), cluster.device("bob")
    pair(alice, bob)
    paths = share_folder(alice, "bulk", tmp_path / "alice-bulk", bob)
    (paths[bob] / "bob-local.txt").write_bytes(b"bob's own\n")
    wait_converged(paths, expected={"bob-local.txt": b"bob's own\n"})

    files = small_files("incoming", 2000)
    write_files(paths[alice], files)

    def bob_is_applying() -> bool:
        return 0 < count_files(paths[bob], "incoming")

    wait_until(bob_is_applying, "bob to start writing alice's files", cluster, timeout=60, interval=0.002)
    bob.kill()
    arrived = count_files(paths[bob], "incoming")
    print(f"bob killed with {arrived} of {len(files)} files written")
    bob.start()
    expected = {**files, "bob-local.txt": b"bob's own\n"}
    wait_converged(paths, expected=expected, timeout=60)
    # A kill mid-apply must not make alice's files look like bob's edits.
    assert commit_authors(paths[bob], "incoming") == {author_email(alice)}, (
        f"after a kill with {arrived} of {len(files)} files written, bob committed some of alice's files as his own"
    )
    for folder in paths.values():
        check_repository(folder)


def test_a_peer_offline_for_a_while_catches_up_both_ways(cluster, tmp_path: Path) -> None:
    alice, bob = cluster.device("alice"), cluster.device("bob")
    pair(alice, bob)
    seed = tmp_path / "alice-shared"
    start = {"keep.txt": b"keep\n", "edit.txt": b"v1\n", "delete.txt": b"bye\n", "rename.txt": b"moving\n",
             "bob-edits.txt": b"v1\n"}
    write_files(seed, start)
    paths = share_folder(alice, "shared", seed, bob)
    wait_converged(paths, expected=start)

    bob.stop()
    a, b = paths[alice], paths[bob]
    (a / "edit.txt").write_bytes(b"v2 by alice while bob was away\n")
    (a / "delete.txt").unlink()
    (a / "rename.txt").rename(a / "renamed.txt")
    write_files(a, {"new/from-alice.txt": b"new\n"})
    # bob's own changes while his daemon is down: committed when it starts.
    (b / "bob-edits.txt").write_bytes(b"v2 by bob offline\n")
    write_files(b, {"from-bob-offline.txt": b"offline\n"})
    time.sleep(5)
    bob.start()
    expected = {
        "keep.txt": b"keep\n",
        "edit.txt": b"v2 by alice while bob was away\n",
        "renamed.txt": b"moving\n",
        "new/from-alice.txt": b"new\n",
        "bob-edits.txt": b"v2 by bob offline\n",
        "from-bob-offline.txt": b"offline\n",
    }
    wait_converged(paths, expected=expected, timeout=45)
    for folder in paths.values():
        check_repository(folder)
