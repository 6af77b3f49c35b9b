"""Folder repositories: init, what init refuses, opening, locating files, main's compare-and-swap, the lock."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocsync_tui.vcs.committer import commit_pending
from ocsync_tui.vcs.folder import (
    MARKER_NAME,
    FolderRepo,
    ForeignRepositoryError,
    HeadMovedError,
    MarkerMismatchError,
    NestedFolderError,
    NotAFolderError,
    init_folder,
    locate_file,
)
from ocsync_tui.vcs.lock import FolderLock, FolderLockedError
from tests.conftest import git_fsck_strict


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout


def test_init_creates_main_the_marker_and_a_folder_id(tmp_path, identity):
    root = tmp_path / "new-folder"  # created by init
    report = init_folder(root, identity)
    assert report.committed == []
    folder = FolderRepo.open(root)
    assert folder.path == root.resolve() and folder.git_dir == root.resolve() / ".git"
    assert folder.head() is None
    assert folder.folder_id in (root / MARKER_NAME).read_text()
    assert git(root, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    other = tmp_path / "other"
    init_folder(other, identity)
    assert FolderRepo.open(other).folder_id != folder.folder_id
    git_fsck_strict(root)


def test_init_of_an_existing_folder_commits_pending_changes_and_says_so(tmp_path, identity):
    root = tmp_path / "folder"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    init_folder(root, identity)
    folder_id = FolderRepo.open(root).folder_id
    (root / "b.txt").write_text("b\n")
    report = init_folder(root, identity)
    assert [(r.action, r.path) for r in report.committed] == [("add", "b.txt")]
    assert any("already is an ocsync folder" in note for note in report.notes)
    assert FolderRepo.open(root).folder_id == folder_id
    git_fsck_strict(root)


def test_init_refuses_a_git_repository_ocsync_did_not_make(tmp_path, identity):
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q")
    (root / "code.py").write_text("print()\n")
    with pytest.raises(ForeignRepositoryError, match="did not create"):
        init_folder(root, identity)
    with pytest.raises(ForeignRepositoryError):
        FolderRepo.open(root)
    assert git(root, "status", "--porcelain") == "?? code.py\n", "the foreign repository was touched"


def test_init_refuses_nesting_in_either_direction(tmp_path, identity):
    outer = tmp_path / "outer"
    init_folder(outer, identity)
    with pytest.raises(NestedFolderError, match="inside the ocsync folder"):
        init_folder(outer / "inner", identity)
    (outer / "inner").rmdir()
    lone = tmp_path / "parent" / "lone"
    init_folder(lone, identity)
    with pytest.raises(NestedFolderError, match="contains the ocsync folder"):
        init_folder(tmp_path / "parent", identity)
    assert not (tmp_path / "parent" / ".git").exists()


def test_open_explains_what_is_wrong(tmp_path, identity):
    with pytest.raises(NotAFolderError, match="not a directory"):
        FolderRepo.open(tmp_path / "missing")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotAFolderError, match="ocsync init"):
        FolderRepo.open(plain)
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    (worktree / ".git").write_text("gitdir: /elsewhere/.git/worktrees/x\n")
    with pytest.raises(ForeignRepositoryError, match="link file"):
        init_folder(worktree, identity)
    root = tmp_path / "folder"
    init_folder(root, identity)
    (root / MARKER_NAME).write_text("folder-id: aaaa-bbbb-cccc-dddd\n")
    with pytest.raises(MarkerMismatchError, match="copied from another folder"):
        FolderRepo.open(root)
    (root / MARKER_NAME).unlink()
    assert FolderRepo.open(root).marker_present is False


def test_set_head_is_a_compare_and_swap(tmp_path, identity):
    root = tmp_path / "folder"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    (root / "b.txt").write_text("b\n")
    init_folder(root, identity)
    folder = FolderRepo.open(root)
    head = folder.head()
    parent = folder.repo[head].parents[0]
    with pytest.raises(HeadMovedError, match="moved"):
        folder.set_head(parent, expected_old=parent)
    with pytest.raises(HeadMovedError):
        folder.set_head(parent, expected_old=None)
    folder.set_head(parent, expected_old=head)
    assert folder.head() == parent
    git_fsck_strict(root)


def test_locate_file_finds_the_enclosing_folder(tmp_path, identity):
    root = tmp_path / "folder"
    (root / "deep/er").mkdir(parents=True)
    (root / "deep/er/file.txt").write_text("x\n")
    init_folder(root, identity)
    assert locate_file(root / "deep/er/file.txt") == (root.resolve(), "deep/er/file.txt")
    assert locate_file(root / "deep/er/deleted-long-ago.txt") == (root.resolve(), "deep/er/deleted-long-ago.txt")
    with pytest.raises(NotAFolderError, match="not inside an ocsync folder"):
        locate_file(tmp_path / "elsewhere.txt")
    with pytest.raises(NotAFolderError, match="repository"):
        locate_file(root / ".git/config")


def test_a_second_writer_gets_a_clear_error(tmp_path, identity):
    root = tmp_path / "folder"
    init_folder(root, identity)
    git_dir = FolderRepo.open(root).git_dir
    with FolderLock(git_dir):
        with pytest.raises(FolderLockedError, match=f"process {os.getpid()} is writing"):
            with FolderLock(git_dir):
                pass
    with FolderLock(git_dir):  # released on exit
        pass


def test_the_lock_excludes_another_process_and_dies_with_it(tmp_path, identity):
    root = tmp_path / "folder"
    init_folder(root, identity)
    git_dir = FolderRepo.open(root).git_dir
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom ocsync_tui.vcs.lock import FolderLock\n"
         f"with FolderLock({str(git_dir)!r}):\n    print('locked', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=f"process {holder.pid} is writing"):
            with FolderLock(git_dir):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with FolderLock(git_dir):  # a killed holder leaves nothing locked
        pass


def test_kill9_during_init_leaves_a_valid_repository_and_loses_nothing(tmp_path, identity, home):
    source = tmp_path / "source"
    files = {f"d{i % 20}/f{i}.txt": os.urandom(64 + i % 500) for i in range(600)}
    for relpath, content in files.items():
        (source / relpath).parent.mkdir(parents=True, exist_ok=True)
        (source / relpath).write_bytes(content)
    command = [sys.executable, "-m", "ocsync_tui", "--home", str(home), "init"]
    rng = random.Random(4)
    started = time.monotonic()
    baseline = source.with_name("baseline")
    subprocess.run(["cp", "-a", str(source), str(baseline)], check=True)
    subprocess.run([*command, str(baseline)], check=True, capture_output=True)
    duration = time.monotonic() - started
    for attempt in range(3):
        root = tmp_path / f"attempt{attempt}"
        subprocess.run(["cp", "-a", str(source), str(root)], check=True)
        process = subprocess.Popen([*command, str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=rng.uniform(0.05, 1.0) * duration)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        if (root / ".git").exists():
            git_fsck_strict(root)
        subprocess.run([*command, str(root)], check=True, capture_output=True)
        git_fsck_strict(root)
        for relpath, content in files.items():
            assert (root / relpath).read_bytes() == content
        tracked = git(root, "ls-tree", "-r", "--name-only", "HEAD").split()
        assert sorted(tracked) == sorted(files)
        assert not commit_pending(FolderRepo.open(root), identity).committed


def test_joining_an_offered_folder_keeps_its_id_and_refuses_another(tmp_path, identity):
    from ocsync_tui.vcs.folder import FolderIdMismatchError, FolderRepo, init_folder

    init_folder(tmp_path / "joined", identity, folder_id="abcd-efgh-ijkl-mnop")
    assert FolderRepo.open(tmp_path / "joined").folder_id == "abcd-efgh-ijkl-mnop"
    with pytest.raises(FolderIdMismatchError, match="already is the ocsync folder abcd-efgh-ijkl-mnop"):
        init_folder(tmp_path / "joined", identity, folder_id="qrst-uvwx-yz23-4567")
