"""Per-file history and restore, checked against what the real git CLI shows."""

import os
import subprocess
from pathlib import Path

import pytest

from ocsync_tui.vcs.committer import commit_pending
from ocsync_tui.vcs.folder import FolderRepo, init_folder
from ocsync_tui.vcs.history import HistoryError, file_log, restore_file
from tests.conftest import git_fsck_strict


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "folder"


def edit(folder: FolderRepo, identity, relpath: str, content: bytes | None, clock: float) -> str:
    """Change one file (None deletes it) and commit it at a fixed time; return the commit id."""
    path = folder.path / relpath
    if content is None:
        path.unlink()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    report = commit_pending(folder, identity, clock=lambda: clock)
    assert len(report.committed) == 1
    return report.committed[0].commit_id


@pytest.fixture
def history(root, identity):
    """notes.txt: v1, v2, v3 at known times; other.txt alongside; gone.txt added then deleted."""
    root.mkdir()
    init_folder(root, identity)
    folder = FolderRepo.open(root)
    ids = {
        "v1": edit(folder, identity, "notes.txt", b"v1\n", 1_700_000_000),
        "other": edit(folder, identity, "other.txt", b"other\n", 1_700_000_100),
        "v2": edit(folder, identity, "notes.txt", b"v2\n", 1_700_000_200),
        "gone": edit(folder, identity, "dir/gone.txt", b"last words\n", 1_700_000_300),
        "v3": edit(folder, identity, "notes.txt", b"v3\n", 1_700_000_400),
        "deleted": edit(folder, identity, "dir/gone.txt", None, 1_700_000_500),
    }
    return folder, ids


def test_file_log_lists_the_commits_that_touched_the_file_newest_first(history, identity):
    folder, ids = history
    log = file_log(folder, "notes.txt")
    assert [(entry.commit_id, entry.action) for entry in log] == [
        (ids["v3"], "modify"), (ids["v2"], "modify"), (ids["v1"], "add")
    ]
    assert [entry.commit_id for entry in log] == git(folder.path, "log", "--format=%H", "--", "notes.txt").split()
    assert log[0].time == 1_700_000_400 and log[0].time_text == "2023-11-14 22:20:00 UTC"
    assert log[0].device_name == identity.name and log[0].device_id == identity.device_id
    assert [entry.action for entry in file_log(folder, "dir/gone.txt")] == ["delete", "add"]
    assert file_log(folder, "never-there.txt") == []


def test_restore_defaults_to_the_version_before_the_current_one(history, identity):
    folder, ids = history
    before = git(folder.path, "rev-parse", "HEAD").strip()
    record = restore_file(folder, identity, "notes.txt", None)
    assert (folder.path / "notes.txt").read_bytes() == b"v2\n"
    assert record.path == "notes.txt" and record.source_rev == ids["v2"]
    assert git(folder.path, "rev-parse", "HEAD").strip() == record.commit_id
    assert git(folder.path, "log", "-1", "--format=%s").strip() == "modify notes.txt"
    # Only that file changed, and nothing else in the folder moved.
    assert git(folder.path, "diff", "--name-only", before, record.commit_id).split() == ["notes.txt"]
    assert (folder.path / "other.txt").read_bytes() == b"other\n"
    assert git(folder.path, "status", "--porcelain", "--untracked-files=all") == ""
    git_fsck_strict(folder.path)


def test_restore_a_short_revision(history, identity):
    folder, ids = history
    record = restore_file(folder, identity, "notes.txt", ids["v1"][:7])
    assert (folder.path / "notes.txt").read_bytes() == b"v1\n"
    assert record.source_rev == ids["v1"]
    assert [entry.action for entry in file_log(folder, "notes.txt")][:2] == ["modify", "modify"]
    git_fsck_strict(folder.path)


def test_restore_a_deleted_file_brings_back_its_last_content(history, identity):
    folder, ids = history
    record = restore_file(folder, identity, "dir/gone.txt", None)
    assert (folder.path / "dir/gone.txt").read_bytes() == b"last words\n"
    assert record.source_rev == ids["gone"]
    assert git(folder.path, "log", "-1", "--format=%s").strip() == "add dir/gone.txt"
    git_fsck_strict(folder.path)


def test_restore_first_commits_an_unsaved_local_edit(history, identity):
    folder, ids = history
    (folder.path / "notes.txt").write_bytes(b"unsaved edit\n")
    restore_file(folder, identity, "notes.txt", ids["v1"])
    assert (folder.path / "notes.txt").read_bytes() == b"v1\n"
    assert git(folder.path, "show", "HEAD~1:notes.txt") == "unsaved edit\n", "the local edit was lost"
    git_fsck_strict(folder.path)


def test_restore_keeps_the_executable_bit_and_symlinks(root, identity):
    root.mkdir()
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho 1\n")
    (root / "run.sh").chmod(0o755)
    os.symlink("target-one", root / "link")
    init_folder(root, identity)
    folder = FolderRepo.open(root)
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho 2\n")
    (root / "link").unlink()
    os.symlink("target-two", root / "link")
    commit_pending(folder, identity)
    restore_file(folder, identity, "run.sh", None)
    restore_file(folder, identity, "link", None)
    assert os.access(root / "run.sh", os.X_OK) and (root / "run.sh").read_bytes() == b"#!/bin/sh\necho 1\n"
    assert os.readlink(root / "link") == "target-one"
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    git_fsck_strict(root)


def test_restore_refuses_what_it_cannot_do(history, identity):
    folder, ids = history
    head = folder.head()
    with pytest.raises(HistoryError, match="never been committed"):
        restore_file(folder, identity, "never-there.txt", None)
    with pytest.raises(HistoryError, match="no commit"):
        restore_file(folder, identity, "notes.txt", "deadbeef")
    with pytest.raises(HistoryError, match="not a revision"):
        restore_file(folder, identity, "notes.txt", "v2")
    with pytest.raises(HistoryError, match="did not exist"):
        restore_file(folder, identity, "dir/gone.txt", ids["deleted"])
    with pytest.raises(HistoryError, match="already is"):
        restore_file(folder, identity, "notes.txt", ids["v3"])
    assert folder.head() == head
    git_fsck_strict(folder.path)
