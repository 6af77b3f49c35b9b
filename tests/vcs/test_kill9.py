"""SIGKILL at random moments of `ocsync commit` and `ocsync bundle apply`; the next run repairs everything.

Each scenario is timed once uninterrupted, then repeated on fresh copies of the same folder with a kill
at a seeded random fraction of that time. After the rerun: git fsck --strict passes, the working tree is
HEAD, every file's content is in HEAD, and the receiving device never committed a peer's file as its own.
"""

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import git_fsck_strict
from tests.vcs.devices import Device, make_device, run_cli

ITERATIONS = 4
pytestmark = pytest.mark.slow


def run_killed_after(home: Path, delay: float, *args: str) -> None:
    """Start `ocsync ARGS`, SIGKILL it after `delay` seconds unless it finished first."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ocsync_tui", "--home", str(home), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()


def timed_cli(home: Path, *args: str) -> float:
    started = time.monotonic()
    result = run_cli(home, *args)
    assert result.returncode == 0, result.stderr
    return time.monotonic() - started


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr


def commits_by(device: Device) -> list[list[bytes]]:
    """For each non-merge commit the device authored, the paths it changed."""
    repo = device.folder.repo
    email = f"<{device.identity.device_id}@ocsync.invalid>".encode()
    found = []
    for entry in repo.get_walker():
        commit = entry.commit
        if len(commit.parents) > 1 or not commit.author.endswith(email):
            continue
        parent_tree = repo[commit.parents[0]].tree if commit.parents else None
        found.append([(new or old) for (old, new), _, _ in repo.object_store.tree_changes(parent_tree, commit.tree)])
    return found


def assert_consistent(device: Device, expected_files: dict[str, bytes]) -> None:
    git_fsck_strict(device.root)
    assert not (device.root / ".git" / "ocsync-journal").exists()
    on_disk = device.files()
    assert on_disk == device.head_files(), "the working tree differs from HEAD"
    assert on_disk == expected_files


def test_kill9_during_commit_of_thousands_of_files(tmp_path):
    rng = random.Random(20261125)
    owner = make_device(tmp_path, "owner")
    files = {f"d{n % 20}/f{n}.txt": f"content {n}\n".encode() * (1 + n % 5) for n in range(2500)}
    for relpath, content in files.items():
        owner.write(relpath, content)
    template = tmp_path / "template"
    shutil.copytree(owner.root, template, symlinks=True)
    home = tmp_path / "home-owner"
    duration = timed_cli(home, "commit", str(owner.root))
    assert_consistent(owner, files)

    for iteration in range(ITERATIONS):
        copy = Device(owner.name, owner.identity, tmp_path / f"run{iteration}")
        shutil.copytree(template, copy.root, symlinks=True)
        run_killed_after(home, rng.uniform(0.2, 1.0) * duration, "commit", str(copy.root))
        ok(run_cli(home, "commit", str(copy.root)))
        assert_consistent(copy, files)
        assert all(len(paths) == 1 for paths in commits_by(copy))


def test_kill9_during_bundle_apply_touching_many_files(tmp_path):
    rng = random.Random(4996)
    initial = {f"dir{n % 10}/file{n}": f"version 1 of {n}\n".encode() for n in range(1500)}
    alice = make_device(tmp_path, "alice", initial)
    bob = make_device(tmp_path, "bob")
    bob.pull_from(alice, tmp_path / "bundles")
    bob.write("bob-only.txt", b"bob's own file\n")
    bob.commit()
    for n in range(1500):
        relpath = f"dir{n % 10}/file{n}"
        if n % 5 == 0:
            alice.delete(relpath)
        else:
            alice.write(relpath, f"version 2 of {n}\n".encode())
    for n in range(300):
        alice.write(f"new/{n % 7}/added{n}", f"added {n}\n".encode())
    alice.commit()
    bundle = alice.bundle_for(bob, tmp_path / "alice-to-bob.bundle")
    expected = alice.files() | {"bob-only.txt": b"bob's own file\n"}
    bob_commits_before = commits_by(bob)

    template = tmp_path / "template"
    shutil.copytree(bob.root, template, symlinks=True)
    home = tmp_path / "home-bob"
    duration = timed_cli(home, "bundle", "apply", str(bob.root), str(bundle), "--from", "alice")
    assert_consistent(bob, expected)

    for iteration in range(ITERATIONS):
        copy = Device(bob.name, bob.identity, tmp_path / f"run{iteration}")
        shutil.copytree(template, copy.root, symlinks=True)
        run_killed_after(
            home, rng.uniform(0.05, 1.0) * duration, "bundle", "apply", str(copy.root), str(bundle), "--from", "alice"
        )
        # The next write command first finishes an interrupted apply; then the apply is simply repeated.
        ok(run_cli(home, "commit", str(copy.root)))
        ok(run_cli(home, "bundle", "apply", str(copy.root), str(bundle), "--from", "alice"))
        assert_consistent(copy, expected)
        assert commits_by(copy) == bob_commits_before, "a peer's change was committed as bob's own edit"
