"""The committer against real folders: one commit per file, safe reads, guards, and what git sees."""

import os
import subprocess
import threading
from pathlib import Path

import pytest

from ocsync_tui.vcs import scan
from ocsync_tui.vcs.committer import MarkerMissingError, commit_pending, refresh_after_checkout
from ocsync_tui.vcs.folder import MARKER_NAME, FolderRepo, init_folder
from ocsync_tui.vcs.statcache import load_stat_cache
from tests.conftest import git_fsck_strict


def git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True)
    return result.stdout


def write(root: Path, relpath: str, content: bytes | str) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def subjects(root: Path) -> list[str]:
    """Commit subjects, oldest first."""
    return git(root, "log", "--reverse", "--format=%s").splitlines()


def head_files(root: Path) -> dict[str, bytes]:
    names = git(root, "ls-tree", "-r", "-z", "--name-only", "HEAD").split("\0")
    return {name: subprocess.run(["git", "-C", str(root), "show", f"HEAD:{name}"], capture_output=True).stdout
            for name in names if name}


def assert_git_agrees(root: Path) -> None:
    git_fsck_strict(root)
    assert git(root, "status", "--porcelain", "--untracked-files=all") == "", "git status is not clean"


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    return tmp_path / "folder"


def test_init_commits_each_file_once_as_this_device(folder_root, identity):
    write(folder_root, "a.txt", "alpha\n")
    write(folder_root, "sub/dir/b.txt", "beta\n")
    write(folder_root, "empty.txt", b"")
    report = init_folder(folder_root, identity)
    assert sorted((r.action, r.path) for r in report.committed) == [
        ("add", "a.txt"), ("add", "empty.txt"), ("add", "sub/dir/b.txt")
    ]
    assert sorted(subjects(folder_root)) == ["add a.txt", "add empty.txt", "add sub/dir/b.txt"]
    author = f"{identity.name} <{identity.device_id}@ocsync.invalid>"
    assert set(git(folder_root, "log", "--format=%an <%ae>|%cn <%ce>").splitlines()) == {f"{author}|{author}"}
    assert head_files(folder_root) == {"a.txt": b"alpha\n", "empty.txt": b"", "sub/dir/b.txt": b"beta\n"}
    # Each commit touches exactly one file.
    for commit in git(folder_root, "rev-list", "HEAD").split():
        assert len(git(folder_root, "show", "--format=", "--name-only", commit).split()) == 1
    assert report.committed[-1].commit_id == git(folder_root, "rev-parse", "HEAD").strip()
    assert_git_agrees(folder_root)


def test_one_pack_per_run_and_no_loose_objects(folder_root, identity):
    for index in range(40):
        write(folder_root, f"d{index % 4}/f{index}.txt", f"content {index}\n")
    init_folder(folder_root, identity)
    packs = list((folder_root / ".git/objects/pack").glob("*.pack"))
    loose = [p for p in (folder_root / ".git/objects").iterdir() if len(p.name) == 2]
    assert len(packs) == 1 and not loose
    assert_git_agrees(folder_root)


def test_no_change_means_no_commit(folder_root, identity):
    write(folder_root, "a.txt", "alpha\n")
    init_folder(folder_root, identity)
    folder = FolderRepo.open(folder_root)
    head = folder.head()
    (folder_root / "a.txt").touch()  # a new mtime, same content: re-read, not committed
    assert commit_pending(folder, identity).committed == []
    assert folder.head() == head
    assert_git_agrees(folder_root)


def test_a_directory_is_compared_whole_and_any_difference_is_found(folder_root, identity):
    for directory in ("a", "b", "b/c"):
        for index in range(3):
            write(folder_root, f"{directory}/f{index}.txt", f"{directory} {index}\n")
    init_folder(folder_root, identity)
    folder = FolderRepo.open(folder_root)
    assert commit_pending(folder, identity).committed == []
    edited = folder_root / "b/f1.txt"
    before = edited.stat()
    edited.write_text("b X\n")  # same size, and the mtime put back: only the ctime tells
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    write(folder_root, "b/c/new.txt", "new\n")
    (folder_root / "a/f2.txt").unlink()
    report = commit_pending(folder, identity)
    assert [(r.action, r.path) for r in report.committed] == [
        ("add", "b/c/new.txt"), ("modify", "b/f1.txt"), ("delete", "a/f2.txt")
    ]
    assert commit_pending(folder, identity).committed == []
    assert_git_agrees(folder_root)


def test_modify_delete_and_rename_commit_the_add_before_the_delete(folder_root, identity):
    write(folder_root, "keep.txt", "keep\n")
    write(folder_root, "edit.txt", "old\n")
    write(folder_root, "gone.txt", "gone\n")
    write(folder_root, "old/name.txt", "moving content\n")
    init_folder(folder_root, identity)
    first_count = len(subjects(folder_root))
    write(folder_root, "edit.txt", "new\n")
    (folder_root / "gone.txt").unlink()
    (folder_root / "old/name.txt").rename(folder_root / "new-name.txt")
    report = commit_pending(FolderRepo.open(folder_root), identity)
    actions = [(r.action, r.path) for r in report.committed]
    assert sorted(actions) == sorted(
        [("modify", "edit.txt"), ("delete", "gone.txt"), ("add", "new-name.txt"), ("delete", "old/name.txt")]
    )
    assert actions.index(("add", "new-name.txt")) < actions.index(("delete", "old/name.txt"))
    assert len(subjects(folder_root)) == first_count + 4
    assert head_files(folder_root) == {"keep.txt": b"keep\n", "edit.txt": b"new\n", "new-name.txt": b"moving content\n"}
    assert_git_agrees(folder_root)


def test_symlinks_are_stored_as_links_and_never_followed(folder_root, identity, tmp_path):
    outside = tmp_path / "outside"
    write(outside, "secret.txt", "not part of the folder\n")
    folder_root.mkdir()
    os.symlink(outside, folder_root / "link-to-dir")
    os.symlink("missing-target", folder_root / "dangling")
    init_folder(folder_root, identity)
    tree = git(folder_root, "ls-tree", "-r", "HEAD")
    assert "120000 blob" in tree and "secret.txt" not in tree
    assert head_files(folder_root) == {"link-to-dir": os.fsencode(outside), "dangling": b"missing-target"}
    assert_git_agrees(folder_root)


def test_executable_bit_is_a_modification(folder_root, identity):
    script = write(folder_root, "run.sh", "#!/bin/sh\n")
    init_folder(folder_root, identity)
    script.chmod(0o755)
    report = commit_pending(FolderRepo.open(folder_root), identity)
    assert [(r.action, r.path) for r in report.committed] == [("modify", "run.sh")]
    assert "100755 blob" in git(folder_root, "ls-tree", "HEAD", "run.sh")
    assert_git_agrees(folder_root)


def test_ignore_file_skips_untracked_but_never_untracks(folder_root, identity):
    write(folder_root, ".ocsyncignore", "*.tmp\nbuild/\n!build/keep.txt\n")
    write(folder_root, "a.txt", "a\n")
    write(folder_root, "scratch.tmp", "x\n")
    write(folder_root, "build/out.o", "x\n")
    write(folder_root, "tracked.log", "log\n")
    init_folder(folder_root, identity)
    assert set(head_files(folder_root)) == {".ocsyncignore", "a.txt", "tracked.log"}
    # A pattern that starts matching a tracked file does not turn it into a deletion.
    write(folder_root, ".ocsyncignore", "*.tmp\nbuild/\n*.log\n")
    write(folder_root, "tracked.log", "log, edited\n")
    report = commit_pending(FolderRepo.open(folder_root), identity)
    assert sorted((r.action, r.path) for r in report.committed) == [
        ("modify", ".ocsyncignore"), ("modify", "tracked.log")
    ]
    git_fsck_strict(folder_root)


def test_empty_directories_are_not_tracked_and_a_file_may_become_a_directory(folder_root, identity):
    (folder_root / "empty/nested").mkdir(parents=True)
    write(folder_root, "thing", "a file\n")
    init_folder(folder_root, identity)
    assert set(head_files(folder_root)) == {"thing"}
    (folder_root / "thing").unlink()
    write(folder_root, "thing/inside.txt", "now a directory\n")
    report = commit_pending(FolderRepo.open(folder_root), identity)
    assert [(r.action, r.path) for r in report.committed] == [("delete", "thing"), ("add", "thing/inside.txt")]
    (folder_root / "thing/inside.txt").unlink()
    (folder_root / "thing").rmdir()
    write(folder_root, "thing", "a file again\n")
    report = commit_pending(FolderRepo.open(folder_root), identity)
    assert [(r.action, r.path) for r in report.committed] == [("delete", "thing/inside.txt"), ("add", "thing")]
    assert head_files(folder_root) == {"thing": b"a file again\n"}
    assert_git_agrees(folder_root)


def test_unstorable_entries_are_skipped_with_a_reason(folder_root, identity):
    write(folder_root, "fine.txt", "ok\n")
    os.mkfifo(folder_root / "pipe")
    write(folder_root, os.fsdecode(b"bad-\xff-name.txt"), "not utf-8\n")
    write(folder_root, "vendor/lib/.git/config", "[core]\n")
    write(folder_root, "vendor/lib/code.py", "print()\n")
    report = init_folder(folder_root, identity)
    assert set(head_files(folder_root)) == {"fine.txt", "vendor/lib/code.py"}
    reasons = dict(report.skipped)
    assert "pipe" in reasons and "vendor/lib/.git" in reasons
    assert "not valid UTF-8" in reasons[os.fsdecode(b"bad-\xff-name.txt")]
    git_fsck_strict(folder_root)


def test_a_file_vanishing_mid_scan_is_skipped_with_a_warning(folder_root, identity, monkeypatch):
    write(folder_root, "stays.txt", "stays\n")
    doomed = write(folder_root, "doomed.txt", "short-lived\n")
    real_open = os.open

    def open_after_deleting(path, *args, **kwargs):
        if os.fsencode(path).endswith(b"/doomed.txt") and doomed.exists():
            doomed.unlink()
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_after_deleting)
    report = init_folder(folder_root, identity)
    assert ("doomed.txt", "vanished during the scan") in report.skipped
    assert set(head_files(folder_root)) == {"stays.txt"}
    git_fsck_strict(folder_root)


def test_a_file_written_while_read_is_never_committed_torn(folder_root, identity, monkeypatch):
    growing = write(folder_root, "growing.log", "first line\n")
    real_read = os.read
    writes = {"count": 0}

    def read_while_someone_appends(fd, size):
        data = real_read(fd, size)
        if writes["count"] == 0 and data.startswith(b"first line"):
            writes["count"] += 1
            with open(growing, "ab") as handle:  # the writer gets in between our two stats
                handle.write(b"second line\n")
        return data

    monkeypatch.setattr(os, "read", read_while_someone_appends)
    report = init_folder(folder_root, identity)
    assert report.committed == []
    assert report.skipped and report.skipped[0][0] == "growing.log" and "being written" in report.skipped[0][1]
    monkeypatch.setattr(os, "read", real_read)
    report = commit_pending(FolderRepo.open(folder_root), identity)
    assert [(r.action, r.path) for r in report.committed] == [("add", "growing.log")]
    assert head_files(folder_root) == {"growing.log": b"first line\nsecond line\n"}
    assert_git_agrees(folder_root)


class _CoarseStat:
    """A stat result as a filesystem with one-second timestamps (and no useful ctime) reports it."""

    def __init__(self, real: os.stat_result) -> None:
        for name in ("st_mode", "st_ino", "st_dev", "st_uid", "st_gid", "st_size", "st_nlink"):
            setattr(self, name, getattr(real, name))
        self.st_mtime_ns = real.st_mtime_ns // 1_000_000_000 * 1_000_000_000
        self.st_ctime_ns = self.st_mtime_ns


class _CoarseEntry:
    def __init__(self, entry: os.DirEntry) -> None:
        self._entry = entry
        self.name, self.path = entry.name, entry.path

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return self._entry.is_dir(follow_symlinks=follow_symlinks)

    def is_symlink(self) -> bool:
        return self._entry.is_symlink()

    def stat(self, *, follow_symlinks: bool = True) -> _CoarseStat:
        return _CoarseStat(self._entry.stat(follow_symlinks=follow_symlinks))


class _CoarseScandir:
    def __init__(self, path) -> None:
        self._listing = _REAL_SCANDIR(path)

    def __iter__(self):
        return self

    def __next__(self) -> _CoarseEntry:
        return _CoarseEntry(next(self._listing))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._listing.close()


_REAL_SCANDIR = os.scandir


@pytest.fixture
def coarse_timestamps(monkeypatch):
    """Every stat as a one-second-granularity filesystem would give it."""
    real_lstat, real_fstat = os.lstat, os.fstat
    monkeypatch.setattr(os, "scandir", _CoarseScandir)
    monkeypatch.setattr(os, "lstat", lambda *a, **k: _CoarseStat(real_lstat(*a, **k)))
    monkeypatch.setattr(os, "fstat", lambda *a, **k: _CoarseStat(real_fstat(*a, **k)))


def test_a_racy_edit_in_the_same_timestamp_tick_is_still_detected(folder_root, identity, coarse_timestamps):
    tick = 1_700_000_000 * 1_000_000_000
    notes = write(folder_root, "notes.txt", "aaaa\n")
    os.utime(notes, ns=(tick, tick))
    init_folder(folder_root, identity)
    index = folder_root / ".git/index"
    os.utime(index, ns=(tick, tick))  # the index was written in the same tick as the file
    with open(notes, "r+b") as handle:  # same size, same inode, same (coarse) times: the stat cannot tell
        handle.write(b"bbbb\n")
    os.utime(notes, ns=(tick, tick))
    report = commit_pending(FolderRepo.open(folder_root), identity)
    assert [(r.action, r.path) for r in report.committed] == [("modify", "notes.txt")]
    assert head_files(folder_root) == {"notes.txt": b"bbbb\n"}
    git_fsck_strict(folder_root)


def test_a_racy_entry_outside_a_partial_scan_stays_racy(folder_root, identity, coarse_timestamps):
    tick = 1_700_000_000 * 1_000_000_000
    notes = write(folder_root, "notes.txt", "aaaa\n")
    write(folder_root, "other.txt", "other\n")
    os.utime(notes, ns=(tick, tick))
    init_folder(folder_root, identity)
    os.utime(folder_root / ".git/index", ns=(tick, tick))
    with open(notes, "r+b") as handle:
        handle.write(b"bbbb\n")
    os.utime(notes, ns=(tick, tick))
    write(folder_root, "other.txt", "other, edited\n")
    folder = FolderRepo.open(folder_root)
    # A scan of another path rewrites the index; the unchecked racy entry must not become trusted.
    assert [r.path for r in commit_pending(folder, identity, paths=["other.txt"]).committed] == ["other.txt"]
    assert [(r.action, r.path) for r in commit_pending(folder, identity).committed] == [("modify", "notes.txt")]
    git_fsck_strict(folder_root)


def test_paths_restricts_the_scan(folder_root, identity):
    write(folder_root, "a.txt", "a\n")
    write(folder_root, "dir/b.txt", "b\n")
    init_folder(folder_root, identity)
    write(folder_root, "a.txt", "a2\n")
    write(folder_root, "dir/b.txt", "b2\n")
    write(folder_root, "dir/c.txt", "c\n")
    folder = FolderRepo.open(folder_root)
    report = commit_pending(folder, identity, paths=["dir/b.txt"])
    assert [(r.action, r.path) for r in report.committed] == [("modify", "dir/b.txt")]
    report = commit_pending(folder, identity, paths=["dir"])
    assert [(r.action, r.path) for r in report.committed] == [("add", "dir/c.txt")]
    (folder_root / "dir/c.txt").unlink()
    report = commit_pending(folder, identity, paths=["dir/c.txt", "never-existed.txt"])
    assert [(r.action, r.path) for r in report.committed] == [("delete", "dir/c.txt")]
    assert [r.path for r in commit_pending(folder, identity).committed] == ["a.txt"]
    with pytest.raises(ValueError):
        commit_pending(folder, identity, paths=["../escape"])
    assert_git_agrees(folder_root)


def test_mass_deletion_is_held_until_confirmed(folder_root, identity):
    for index in range(30):
        write(folder_root, f"f{index:02}.txt", f"{index}\n")
    init_folder(folder_root, identity)
    for index in range(20):
        (folder_root / f"f{index:02}.txt").unlink()
    write(folder_root, "new.txt", "new\n")
    folder = FolderRepo.open(folder_root)
    report = commit_pending(folder, identity)
    assert [(r.action, r.path) for r in report.committed] == [("add", "new.txt")]
    assert sorted(report.held_deletions) == [f"f{index:02}.txt" for index in range(20)]
    assert len(head_files(folder_root)) == 31
    again = commit_pending(folder, identity)
    assert again.committed == [] and len(again.held_deletions) == 20, "held deletions must stay held"
    confirmed = commit_pending(folder, identity, confirm_deletions=True)
    assert sorted(r.path for r in confirmed.committed) == [f"f{index:02}.txt" for index in range(20)]
    assert {r.action for r in confirmed.committed} == {"delete"} and not confirmed.held_deletions
    assert len(head_files(folder_root)) == 11
    git_fsck_strict(folder_root)


def test_few_deletions_and_renames_are_not_held(folder_root, identity):
    for index in range(30):
        write(folder_root, f"old/f{index:02}.txt", f"{index}\n")
    init_folder(folder_root, identity)
    (folder_root / "old").rename(folder_root / "new")  # 30 deletions, all of them renames
    report = commit_pending(FolderRepo.open(folder_root), identity)
    assert not report.held_deletions
    assert len(report.committed) == 60 and report.committed[29].action == "add"
    for index in range(10):
        (folder_root / f"new/f{index:02}.txt").unlink()
    report = commit_pending(FolderRepo.open(folder_root), identity)
    assert not report.held_deletions and len(report.committed) == 10
    git_fsck_strict(folder_root)


def test_a_missing_marker_refuses_deletions(folder_root, identity):
    write(folder_root, "a.txt", "a\n")
    write(folder_root, "b.txt", "b\n")
    init_folder(folder_root, identity)
    (folder_root / MARKER_NAME).unlink()
    write(folder_root, "c.txt", "new file\n")
    folder = FolderRepo.open(folder_root)  # reading still works
    assert [r.path for r in commit_pending(folder, identity).committed] == ["c.txt"], "adds need no marker"
    (folder_root / "a.txt").unlink()
    head = folder.head()
    with pytest.raises(MarkerMissingError, match="unmounted"):
        commit_pending(folder, identity, confirm_deletions=True)
    assert folder.head() == head
    report = init_folder(folder_root, identity)  # restores the marker, then commits the deletion
    assert (folder_root / MARKER_NAME).exists()
    assert [(r.action, r.path) for r in report.committed] == [("delete", "a.txt")]
    git_fsck_strict(folder_root)


def test_commit_time_never_goes_below_the_parent(folder_root, identity):
    write(folder_root, "a.txt", "a\n")
    folder_root.mkdir(exist_ok=True)
    init_folder(folder_root, identity)
    folder = FolderRepo.open(folder_root)
    write(folder_root, "a.txt", "from the future\n")
    commit_pending(folder, identity, clock=lambda: 2_000_000_000.0)
    write(folder_root, "b.txt", "clock went back\n")
    write(folder_root, "c.txt", "clock went back\n")
    commit_pending(folder, identity, clock=lambda: 1_000_000_000.0)
    times = [int(t) for t in git(folder_root, "log", "--format=%ct|%at").replace("|", "\n").split()]
    assert times[:4] == [2_000_000_001] * 4
    assert times[4:6] == [2_000_000_000] * 2
    git_fsck_strict(folder_root)


def test_a_flat_folder_stores_tree_versions_as_deltas(folder_root, identity):
    count = 400
    for index in range(count):
        write(folder_root, f"file-{index:05}.txt", f"{index}\n")
    init_folder(folder_root, identity)
    # Without deltas the root tree versions alone hold sum(36 * i) bytes, about 2.9 MB.
    whole_trees = sum(36 * i for i in range(1, count + 1))
    pack_bytes = sum(p.stat().st_size for p in (folder_root / ".git/objects/pack").glob("*.pack"))
    assert pack_bytes < whole_trees / 10
    assert_git_agrees(folder_root)


def test_refresh_after_checkout_records_only_the_trees_content(folder_root, identity):
    write(folder_root, "a.txt", "version 1\n")
    write(folder_root, "b.txt", "b\n")
    init_folder(folder_root, identity)
    folder = FolderRepo.open(folder_root)
    tree = folder.repo[folder.head()].tree
    # As a checkout does: a new inode with the tree's content, written after the index.
    for name in ("a.txt", "b.txt"):
        write(folder_root, name + ".tmp", (folder_root / name).read_bytes())
        os.replace(folder_root / (name + ".tmp"), folder_root / name)
    write(folder_root, "b.txt", "a local edit that raced the checkout\n")
    refresh_after_checkout(folder, tree, [b"a.txt", "b.txt"])
    cache = load_stat_cache(folder.git_dir)
    assert cache.tree_id == tree
    walk = scan.walk_folder(folder_root, cache, scan.IgnoreRules(folder_root))
    assert [c.relpath for c in walk.candidates] == [b"b.txt"], "a.txt must now look clean"
    assert [(r.action, r.path) for r in commit_pending(folder, identity).committed] == [("modify", "b.txt")]
    assert_git_agrees(folder_root)


def test_named_paths_are_judged_by_the_stat_cache_as_a_full_walk_is(folder_root, identity):
    """The watcher names every file an apply wrote: those the stat cache shows unchanged are not read
    again, while one edited since (a new mtime) or racy (modified in the tick the cache was written) is."""
    for name in ("same.txt", "edited.txt", "racy.txt"):
        write(folder_root, f"dir/{name}", name + "\n")
    init_folder(folder_root, identity)
    folder = FolderRepo.open(folder_root)
    write(folder_root, "dir/edited.txt", "edited\n")
    cache = load_stat_cache(folder.git_dir)
    racy = folder_root / "dir" / "racy.txt"
    os.utime(racy, ns=(cache.written_ns, cache.written_ns))
    cache = load_stat_cache(folder.git_dir)

    named = [b"dir/same.txt", b"dir/edited.txt", b"dir/racy.txt", b"dir"]
    walk = scan.walk_folder(folder_root, cache, scan.IgnoreRules(folder_root), named)
    full = scan.walk_folder(folder_root, cache, scan.IgnoreRules(folder_root))

    assert sorted({c.relpath for c in walk.candidates}) == [b"dir/edited.txt", b"dir/racy.txt"]
    assert sorted(c.relpath for c in full.candidates) == [b"dir/edited.txt", b"dir/racy.txt"]


def test_the_stat_cache_survives_git_rewriting_the_index(folder_root, identity):
    write(folder_root, "a.txt", "a\n")
    init_folder(folder_root, identity)
    git(folder_root, "add", "-A")  # git rewrites the index its own way
    git(folder_root, "rm", "--cached", "-q", "a.txt")  # and even drops an entry
    write(folder_root, "b.txt", "b\n")
    report = commit_pending(FolderRepo.open(folder_root), identity)
    assert [(r.action, r.path) for r in report.committed] == [("add", "b.txt")]
    assert_git_agrees(folder_root)


def test_a_commit_racing_a_writer_thread_never_commits_a_torn_file(folder_root, identity):
    init_folder(folder_root, identity)
    target = folder_root / "busy.bin"
    stop = threading.Event()
    versions = [bytes([v]) * 200_000 for v in range(4)]

    def writer() -> None:
        turn = 0
        while not stop.is_set():
            with open(target, "wb") as handle:
                handle.write(versions[turn % 4][:100_000])
                handle.flush()
                handle.write(versions[turn % 4][100_000:])
            turn += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        folder = FolderRepo.open(folder_root)
        for _ in range(15):
            commit_pending(folder, identity)
    finally:
        stop.set()
        thread.join()
    # Every commit holds a state the file passed through (a prefix of one version: the kernel grows a
    # file while one write call runs); never a mix of two versions.
    for commit in git(folder_root, "rev-list", "HEAD").split():
        shown = subprocess.run(["git", "-C", str(folder_root), "show", f"{commit}:busy.bin"], capture_output=True)
        if shown.returncode == 0:
            assert len(set(shown.stdout)) <= 1, "a torn read was committed"
    # Once the writer stops, the next commit records exactly what is on disk.
    commit_pending(folder, identity)
    assert head_files(folder_root)["busy.bin"] == target.read_bytes()
    git_fsck_strict(folder_root)


def test_an_unreadable_directory_never_turns_into_deletions(folder_root, identity, monkeypatch):
    for index in range(5):
        write(folder_root, f"locked/f{index}.txt", f"{index}\n")
    write(folder_root, "locked/deeper/g.txt", "below the unreadable directory\n")
    write(folder_root, "open.txt", "open\n")
    init_folder(folder_root, identity)
    real_open = os.open

    def open_refusing_locked(path, flags, *args, **kwargs):
        if os.fsencode(path).endswith(b"/locked"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_refusing_locked)  # root reads any directory, whatever its mode
    write(folder_root, "open.txt", "open, edited\n")
    report = commit_pending(FolderRepo.open(folder_root), identity)
    assert [(r.action, r.path) for r in report.committed] == [("modify", "open.txt")]
    assert ("locked", "cannot be read (Permission denied)") in report.skipped
    assert len(head_files(folder_root)) == 7
    git_fsck_strict(folder_root)
