"""The daemon harness's own checks can fail: they are what the end-to-end tests rely on."""

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.daemons import (
    Cluster,
    Forwarder,
    HarnessError,
    check_repository,
    conflict_copies,
    head,
    read_tree,
    wait_converged,
)


def git(root: Path, *arguments: str) -> None:
    subprocess.run(["git", "-C", str(root), *arguments], check=True, capture_output=True)


def test_check_repository_refuses_a_commit_of_two_paths(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "one.txt").write_text("1")
    (tmp_path / "two.txt").write_text("2")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=T", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "both")
    with pytest.raises(AssertionError, match="exactly one path"):
        check_repository(tmp_path)


def test_one_commit_per_file_of_ocsync_init_passes(cluster: Cluster, tmp_path: Path) -> None:
    device = cluster.device("solo", start=False)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    device.ocsync("init", folder)
    check_repository(folder)
    assert read_tree(folder) == {"a.txt": b"a", "sub/b.txt": b"b"}
    assert head(folder) is not None and head(tmp_path) is None


def test_wait_converged_names_the_paths_that_differ(cluster: Cluster, tmp_path: Path) -> None:
    device = cluster.device("solo", start=False)
    left, right = tmp_path / "left", tmp_path / "right"
    for root, content in ((left, "same"), (right, "same")):
        root.mkdir()
        (root / "same.txt").write_text(content)
    (right / "extra.txt").write_text("only here")
    with pytest.raises(HarnessError, match=r"extra \['extra.txt'\]"):
        wait_converged({device: left, cluster.device("other", start=False): right}, timeout=0.2)


def test_conflict_copies_are_those_of_the_named_file_only() -> None:
    tree = {
        "notes.txt": b"winner",
        "notes.sync-conflict-20260101-120000-ABCDEFG.txt": b"loser 1",
        "notes.sync-conflict-20260101-120001-HIJKLMN.txt": b"loser 2",
        "other.sync-conflict-20260101-120000-ABCDEFG.txt": b"another file's",
        "dir/notes.sync-conflict-20260101-120000-ABCDEFG.txt": b"in a subdirectory",
    }
    assert set(conflict_copies(tree, "notes.txt")) == {
        "notes.sync-conflict-20260101-120000-ABCDEFG.txt",
        "notes.sync-conflict-20260101-120001-HIJKLMN.txt",
    }


class _Port:
    def __init__(self, udp_port: int) -> None:
        self.udp_port = udp_port


def test_the_forwarder_carries_and_counts_both_directions(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as near, socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM
    ) as far:
        near.bind(("127.0.0.1", 0))
        far.bind(("127.0.0.1", 0))
        near.settimeout(5)
        far.settimeout(5)
        forwarder = Forwarder(tmp_path, _Port(near.getsockname()[1]), _Port(far.getsockname()[1]))
        try:
            far.sendto(b"b" * 100, ("127.0.0.1", forwarder.far_port))
            assert near.recvfrom(2048)[0] == b"b" * 100
            near.sendto(b"a" * 300, ("127.0.0.1", forwarder.near_port))
            assert far.recvfrom(2048)[0] == b"a" * 300
            # The counters file is rewritten every 50 ms.
            deadline = time.monotonic() + 5
            while forwarder.bytes_forwarded() < 400 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert forwarder.counters()["forward_bytes"] == 300
            assert forwarder.counters()["backward_bytes"] == 100
        finally:
            forwarder.close()
