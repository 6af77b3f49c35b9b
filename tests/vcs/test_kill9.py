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

ITERATIONS = 3
pytestmark = pytest.mark.slow


def start_cli(home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ocsync_tui", "--home", str(home), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def run_killed_after(home: Path, delay: float, *args: str, counted_from: Path | None = None) -> None:
    """Start `ocsync ARGS`, SIGKILL it `delay` seconds after the start (or after `counted_from` first
    exists) unless it finished first."""
    process = start_cli(home, *args)
    if counted_from is not None:
        while process.poll() is None and not counted_from.exists():
            time.sleep(0.001)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
    process.stderr.close()


def timed_run(home: Path, *args: str, watch: Path) -> tuple[float, float]:
    """Run `ocsync ARGS` to the end; return (seconds until `watch` first existed, total seconds)."""
    started = time.monotonic()
    process = start_cli(home, *args)
    appeared = None
    while process.poll() is None:
        if appeared is None and watch.exists():
            appeared = time.monotonic() - started
        time.sleep(0.002)
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr.decode()
    total = time.monotonic() - started
    return (total if appeared is None else appeared), total


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
    assert device.git_status() == "", "git's index (our stat cache) disagrees with HEAD or the disk"


def test_kill9_during_commit_of_thousands_of_files(tmp_path):
    rng = random.Random(20261125)
    owner = make_device(tmp_path, "owner")
    files = {f"d{n % 20}/f{n}.txt": f"content {n}\n".encode() * (1 + n % 5) for n in range(2000)}
    for relpath, content in files.items():
        owner.write(relpath, content)
    template = tmp_path / "template"
    shutil.copytree(owner.root, template, symlinks=True)
    home = tmp_path / "home-owner"
    _, duration = timed_run(home, "commit", str(owner.root), watch=owner.root / ".git" / "no-such-file")
    assert_consistent(owner, files)

    interrupted = 0
    for iteration in range(ITERATIONS):
        copy = Device(owner.name, owner.identity, tmp_path / f"run{iteration}")
        shutil.copytree(template, copy.root, symlinks=True)
        run_killed_after(home, rng.uniform(0.2, 1.0) * duration, "commit", str(copy.root))
        interrupted += copy.head_files() != files
        ok(run_cli(home, "commit", str(copy.root)))
        assert_consistent(copy, files)
        assert all(len(paths) == 1 for paths in commits_by(copy))
    assert interrupted, "every commit finished before its kill: the test proved nothing"


def test_kill9_during_bundle_apply_touching_many_files(tmp_path):
    rng = random.Random(4996)
    initial = {f"dir{n % 10}/file{n}": f"version 1 of {n}\n".encode() for n in range(400)}
    alice = make_device(tmp_path, "alice", initial)
    bob = make_device(tmp_path, "bob")
    bob.pull_from(alice, tmp_path / "bundles")
    bob.write("bob-only.txt", b"bob's own file\n")
    bob.commit()
    for n in range(400):
        relpath = f"dir{n % 10}/file{n}"
        if n % 5 == 0:
            alice.delete(relpath)
        else:
            alice.write(relpath, f"version 2 of {n}\n".encode())
    for n in range(80):
        alice.write(f"new/{n % 7}/added{n}", f"added {n}\n".encode())
    alice.commit()
    bundle = alice.bundle_for(bob, tmp_path / "alice-to-bob.bundle")
    expected = alice.files() | {"bob-only.txt": b"bob's own file\n"}
    bob_commits_before = commits_by(bob)

    template = tmp_path / "template"
    shutil.copytree(bob.root, template, symlinks=True)
    home = tmp_path / "home-bob"
    apply_args = ("bundle", "apply", str(bob.root), str(bundle), "--from", "alice")
    journal_written, duration = timed_run(home, *apply_args, watch=bob.root / ".git" / "ocsync-journal")
    assert journal_written < duration, "the apply never wrote its journal"
    assert_consistent(bob, expected)

    # One kill before the journal exists (importing, merging), the others while files are being written.
    kills = [(rng.uniform(0, journal_written), False)]
    # Early in that phase: writing the files is one batch now, and a loaded machine stretches the
    # reference run more than the killed ones, so late kills could all miss the journal.
    kills += [(rng.uniform(0, 0.5) * (duration - journal_written), True) for _ in range(ITERATIONS)]
    interrupted_with_journal = 0
    for iteration, (delay, after_journal) in enumerate(kills):
        copy = Device(bob.name, bob.identity, tmp_path / f"run{iteration}")
        shutil.copytree(template, copy.root, symlinks=True)
        journal = copy.root / ".git" / "ocsync-journal"
        run_killed_after(
            home, delay, "bundle", "apply", str(copy.root), str(bundle), "--from", "alice",
            counted_from=journal if after_journal else None,
        )
        interrupted_with_journal += journal.exists()
        # The next write command first finishes an interrupted apply; then the apply is simply repeated.
        ok(run_cli(home, "commit", str(copy.root)))
        ok(run_cli(home, "bundle", "apply", str(copy.root), str(bundle), "--from", "alice"))
        assert_consistent(copy, expected)
        assert commits_by(copy) == bob_commits_before, "a peer's change was committed as bob's own edit"
    assert interrupted_with_journal, "no kill landed while the journal existed: the test proved nothing"
