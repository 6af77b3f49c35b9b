"""Applying bundles between real folders: fast-forward, symmetric merges, conflicts, commit-before-merge."""

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ocsync_tui.identity import short_device_id
from ocsync_tui.vcs.apply import ApplyReport
from ocsync_tui.vcs.bundle import MissingPrerequisites, create_bundle
from ocsync_tui.vcs.disk_naming import DiskNaming
from tests.conftest import git_fsck_strict
from tests.vcs.devices import Device, make_device, run_cli, verify_bundle


def single_path_commits(device: Device) -> list[tuple[bytes, bytes, list[bytes]]]:
    """(commit id, author, paths it changes against its first parent) for every non-merge commit."""
    repo = device.folder.repo
    found = []
    for entry in repo.get_walker():
        commit = entry.commit
        if len(commit.parents) > 1:
            continue
        parent_tree = repo[commit.parents[0]].tree if commit.parents else None
        changes = repo.object_store.tree_changes(parent_tree, commit.tree)
        found.append((commit.id, commit.author, [(new or old) for (old, new), _, _ in changes]))
    return found


def synced_pair(tmp_path: Path, files: dict[str, bytes]) -> tuple[Device, Device]:
    """alice with `files`, and bob who has pulled all of them."""
    alice = make_device(tmp_path, "alice", files)
    bob = make_device(tmp_path, "bob")
    report = bob.pull_from(alice, tmp_path / "bundles")
    assert report.new_head == alice.head()
    return alice, bob


def exchange(one: Device, other: Device, scratch: Path) -> list[ApplyReport]:
    """Both bundles written before either is applied, so each side merges the other's own state."""
    scratch.mkdir(exist_ok=True)
    to_other = one.bundle_for(other, scratch / f"{os.urandom(4).hex()}.bundle")
    to_one = other.bundle_for(one, scratch / f"{os.urandom(4).hex()}.bundle")
    return [other.apply(to_other, one), one.apply(to_one, other)]


def test_fast_forward_into_an_empty_folder_records_the_peer_head(tmp_path):
    alice = make_device(tmp_path, "alice", {"a.txt": b"A\n", "dir/b.bin": os.urandom(2000), "x/y/z": b""})
    os.chmod(alice.root / "a.txt", 0o755)
    alice.commit()
    bob = make_device(tmp_path, "bob")
    report = bob.pull_from(alice, tmp_path / "bundles")
    assert report.kind == "fast-forward"
    assert report.old_head is None and report.new_head == alice.head() == bob.head()
    assert sorted(report.updated_paths) == [b"a.txt", b"dir/b.bin", b"x/y/z"]
    assert bob.files() == alice.files() == bob.head_files()
    assert os.access(bob.root / "a.txt", os.X_OK)
    assert bob.known_head_of(alice) == alice.head()
    assert "fast-forward" in report.summary()
    assert bob.git_status() == ""
    git_fsck_strict(bob.root)


def test_applying_the_same_bundle_twice_is_up_to_date(tmp_path):
    alice = make_device(tmp_path, "alice", {"a.txt": b"A\n"})
    bob = make_device(tmp_path, "bob")
    bundle = alice.bundle_for(bob, tmp_path / "a.bundle")
    bob.apply(bundle, alice)
    head = bob.head()
    again = bob.apply(bundle, alice)
    assert again.kind == "up-to-date" and again.new_head == head == bob.head()
    assert "up to date" in again.summary()
    git_fsck_strict(bob.root)


def test_a_peer_ref_lock_left_by_a_killed_apply_does_not_block_the_next(tmp_path):
    alice = make_device(tmp_path, "alice", {"a.txt": b"A\n"})
    bob = make_device(tmp_path, "bob")
    bundle = alice.bundle_for(bob, tmp_path / "a.bundle")
    lock = bob.root / ".git" / "refs" / "peers" / "alice" / "main.lock"
    lock.parent.mkdir(parents=True)
    lock.write_bytes(b"half-written by a killed apply\n")

    bob.apply(bundle, alice)

    assert bob.known_head_of(alice) == alice.head() == bob.head()
    assert not lock.exists()
    git_fsck_strict(bob.root)


def test_merging_both_ways_ends_on_one_head(tmp_path):
    alice, bob = synced_pair(tmp_path, {"shared.txt": b"base\n", "other.txt": b"o\n"})
    alice.write("from-alice.txt", b"alice's\n")
    alice.write("shared.txt", b"base\nalice's line\n")
    alice.commit()
    bob.write("from-bob.txt", b"bob's\n")
    bob.delete("other.txt")
    bob.commit()
    exchange(alice, bob, tmp_path / "bundles")
    assert alice.head() == bob.head()
    assert alice.files() == bob.files() == alice.head_files() == {
        "shared.txt": b"base\nalice's line\n",
        "from-alice.txt": b"alice's\n",
        "from-bob.txt": b"bob's\n",
    }
    assert alice.known_head_of(bob) is not None and bob.known_head_of(alice) is not None
    assert alice.git_status() == bob.git_status() == ""
    git_fsck_strict(alice.root)
    git_fsck_strict(bob.root)


def expected_copy_name(device: Device, path: str) -> str:
    """The conflict-copy name DESIGN.md gives the version `device` last committed at `path`."""
    repo = device.folder.repo
    commit = next(iter(repo.get_walker(paths=[path.encode()], max_entries=1))).commit
    stamp = datetime.fromtimestamp(commit.commit_time, UTC).strftime("%Y%m%d-%H%M%S")
    stem, ext = os.path.splitext(path)
    return f"{stem}.sync-conflict-{stamp}-{short_device_id(device.identity.device_id)}{ext}"


def loser_and_winner(one: Device, other: Device, path: str) -> tuple[Device, Device]:
    def rank(device: Device):
        commit = next(iter(device.folder.repo.get_walker(paths=[path.encode()], max_entries=1))).commit
        return (commit.commit_time, device.identity.device_id)

    return (one, other) if rank(one) < rank(other) else (other, one)


def test_a_conflict_keeps_both_versions_under_the_designed_name(tmp_path):
    alice, bob = synced_pair(tmp_path, {"notes.txt": b"base\n"})
    alice.write("notes.txt", b"alice's version\n")
    alice.commit()
    bob.write("notes.txt", b"bob's version\n")
    bob.commit()
    loser, winner = loser_and_winner(alice, bob, "notes.txt")
    copy_name = expected_copy_name(loser, "notes.txt")
    expected = {"notes.txt": winner.files()["notes.txt"], copy_name: loser.files()["notes.txt"]}
    reports = exchange(alice, bob, tmp_path / "bundles")
    assert alice.head() == bob.head()
    assert alice.files() == bob.files() == alice.head_files() == expected
    assert alice.git_status() == bob.git_status() == ""
    for report in reports:
        assert report.kind == "merge"
        assert f"conflict: notes.txt (changed on both sides; other version kept as {copy_name})" in report.summary()
    git_fsck_strict(alice.root)
    git_fsck_strict(bob.root)


def test_an_uncommitted_local_edit_is_committed_first_and_kept(tmp_path):
    alice, bob = synced_pair(tmp_path, {"doc.txt": b"base\n", "untouched.txt": b"u\n"})
    alice.write("doc.txt", b"alice edited\n")
    alice.commit()
    bob.write("doc.txt", b"bob's unsaved work\n")  # never committed before the apply
    bob.write("untouched.txt", b"bob's other unsaved work\n")
    report = bob.pull_from(alice, tmp_path / "bundles")
    assert report.kind == "merge" and report.conflicts
    contents = sorted(bob.files().values())
    assert b"bob's unsaved work\n" in contents and b"alice edited\n" in contents
    assert bob.files()["untouched.txt"] == b"bob's other unsaved work\n"
    bob_commits = [c for c in single_path_commits(bob) if bob.identity.device_id.encode() in c[1]]
    assert any(paths == [b"doc.txt"] for _, _, paths in bob_commits)
    git_fsck_strict(bob.root)
    bob.commit()
    alice.pull_from(bob, tmp_path / "bundles")
    assert alice.files() == bob.files()
    git_fsck_strict(alice.root)


@pytest.mark.parametrize("deleter", ["alice", "bob"])
def test_a_deletion_loses_to_a_modification(tmp_path, deleter):
    alice, bob = synced_pair(tmp_path, {"f.txt": b"base\n", "keep.txt": b"k\n"})
    deleting, modifying = (alice, bob) if deleter == "alice" else (bob, alice)
    deleting.delete("f.txt")
    deleting.commit()
    modifying.write("f.txt", b"modified\n")
    modifying.commit()
    exchange(alice, bob, tmp_path / "bundles")
    assert alice.head() == bob.head()
    assert alice.files() == bob.files() == {"f.txt": b"modified\n", "keep.txt": b"k\n"}
    git_fsck_strict(alice.root)
    git_fsck_strict(bob.root)


def test_missing_prerequisites_are_named(tmp_path):
    alice, bob = synced_pair(tmp_path, {"a": b"1"})
    base = alice.head()
    alice.write("a", b"2")
    alice.commit()
    stranger = make_device(tmp_path, "carol")
    bundle = tmp_path / "thin.bundle"
    create_bundle(alice.folder, [base.decode()], bundle)
    verify_bundle(bob.root, bundle)
    before = stranger.head()
    with pytest.raises(MissingPrerequisites) as missing:
        stranger.apply(bundle, alice)
    assert base.decode()[:10] in str(missing.value) and "\n" not in str(missing.value)
    assert stranger.head() == before and stranger.known_head_of(alice) is None
    git_fsck_strict(stranger.root)


def test_a_path_colliding_on_a_case_folding_disk_becomes_a_committed_conflict_copy(tmp_path):
    alice = make_device(tmp_path, "alice", {"README": b"upper\n", "readme": b"lower\n", "docs/x": b"x\n"})
    bob = make_device(tmp_path, "bob")
    folding = DiskNaming(folds_case=True, normalizes_unicode=False)
    bundle = alice.bundle_for(bob, tmp_path / "to-bob.bundle")
    report = bob.apply(bundle, alice, disk_naming=folding)
    files = bob.files()
    assert files["README"] == b"upper\n" and "readme" not in files and files["docs/x"] == b"x\n"
    [copy] = [name for name in files if name.startswith("readme.sync-conflict-")]
    assert files[copy] == b"lower\n"
    assert bob.head_files() == files and report.new_head == bob.head() != alice.head()
    git_fsck_strict(bob.root)
    alice.pull_from(bob, tmp_path / "bundles")
    assert alice.head() == bob.head() and alice.files() == files
    git_fsck_strict(alice.root)


def test_cli_bundle_create_and_apply(tmp_path):
    alice_dir, bob_dir = tmp_path / "alice", tmp_path / "bob"
    alice_dir.mkdir()
    bob_dir.mkdir()
    (alice_dir / "hello.txt").write_text("hello\n")
    alice_home, bob_home = tmp_path / "home-alice", tmp_path / "home-bob"
    assert run_cli(alice_home, "init", str(alice_dir)).returncode == 0
    assert run_cli(bob_home, "init", str(bob_dir)).returncode == 0
    bundle = tmp_path / "a.bundle"
    created = run_cli(alice_home, "bundle", "create", str(alice_dir), "-o", str(bundle))
    assert created.returncode == 0, created.stderr
    verify_bundle(bob_dir, bundle)

    applied = run_cli(bob_home, "bundle", "apply", str(bob_dir), str(bundle), "--from", "alice")
    assert applied.returncode == 0, applied.stderr
    assert "fast-forward" in applied.stdout
    assert (bob_dir / "hello.txt").read_text() == "hello\n"
    peer_ref = subprocess.run(
        ["git", "-C", str(bob_dir), "rev-parse", "refs/peers/alice/main", "main"], capture_output=True, text=True
    )
    [recorded, main] = peer_ref.stdout.split()
    assert recorded == main

    refused = run_cli(bob_home, "bundle", "apply", str(bob_dir), str(bundle), "--from", "../evil")
    assert refused.returncode == 1
    assert refused.stderr.startswith("ocsync: ") and refused.stderr.count("\n") == 1
    assert "Traceback" not in refused.stderr
    git_fsck_strict(bob_dir)


def test_a_file_added_and_deleted_again_since_the_last_exchange(tmp_path):
    """A new commit's root tree is the prerequisite's again, as after any short-lived file."""
    alice, bob = synced_pair(tmp_path, {f"file{n:02d}.txt": b"%d\n" % n for n in range(30)})
    alice.write("scratch.tmp", b"short-lived\n")
    alice.commit()
    alice.delete("scratch.tmp")
    alice.commit()
    alice.write("kept.txt", b"kept\n")
    alice.commit()
    bundle = alice.bundle_for(bob, tmp_path / "a.bundle")
    check = tmp_path / "git-check.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(bob.root), str(check)], check=True)
    fetched = subprocess.run(
        ["git", "-C", str(check), "fetch", "-q", str(bundle), "main"], capture_output=True, text=True
    )
    assert fetched.returncode == 0, f"git cannot fetch the bundle: {fetched.stderr}"
    bob.apply(bundle, alice)
    assert bob.head() == alice.head() and bob.files() == alice.files()
    git_fsck_strict(bob.root)


def test_a_conflict_copy_that_collides_on_a_folding_disk_is_not_copied_again(tmp_path):
    stamp = "sync-conflict-20240101-000000-ABCDEFG"
    alice = make_device(tmp_path, "alice", {f"Notes.{stamp}.txt": b"upper\n", f"notes.{stamp}.txt": b"lower\n"})
    bob = make_device(tmp_path, "bob", disk_naming=DiskNaming(folds_case=True, normalizes_unicode=False))
    bob.pull_from(alice, tmp_path / "bundles")
    files = bob.files()
    assert sorted(files.values()) == [b"lower\n", b"upper\n"]
    assert all(name.count(".sync-conflict-") == 1 for name in files), sorted(files)
    git_fsck_strict(bob.root)
