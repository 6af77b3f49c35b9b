"""The stat cache is git's index: what we write git reads, and what git writes we read."""

import subprocess
from pathlib import Path

from ocsync_tui.vcs.committer import commit_pending
from ocsync_tui.vcs.folder import FolderRepo, init_folder
from ocsync_tui.vcs.statcache import SIDECAR_NAME, load_stat_cache, save_stat_cache
from tests.conftest import git_fsck_strict


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout


def staged(root: Path) -> dict[bytes, tuple[int, bytes]]:
    """path -> (mode, binary blob id) as `git ls-files --stage` shows the index."""
    result = {}
    for line in git(root, "ls-files", "--stage", "-z").split("\0"):
        if line:
            info, path = line.split("\t", 1)
            mode, sha, _ = info.split()
            result[path.encode()] = (int(mode, 8), bytes.fromhex(sha))
    return result


def ours(root: Path) -> dict[bytes, tuple[int, bytes]]:
    cache = load_stat_cache(root / ".git")
    return {path: (int.from_bytes(stat[24:28], "big"), sha) for path, (stat, sha) in cache.entries.items()}


def make_folder(tmp_path: Path, identity) -> Path:
    root = tmp_path / "folder"
    (root / "dir/sub").mkdir(parents=True)
    (root / "a.txt").write_text("a\n")
    (root / "dir/b.txt").write_text("b\n")
    (root / "dir/sub/c.txt").write_text("c\n")
    (root / "dir-x").mkdir()  # sorts between "dir" and "dir/..." in git's byte order
    (root / "dir-x/d.txt").write_text("d\n")
    init_folder(root, identity)
    return root


def test_git_reads_our_index_and_we_read_the_head_tree_from_it(tmp_path, identity):
    root = make_folder(tmp_path, identity)
    assert ours(root) == staged(root)
    cache = load_stat_cache(root / ".git")
    assert cache.tree_id == git(root, "rev-parse", "HEAD^{tree}").strip().encode()
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(root, "diff-index", "--cached", "HEAD") == "", "git sees staged changes"
    git_fsck_strict(root)


def test_we_read_what_git_writes_in_every_index_version(tmp_path, identity):
    root = make_folder(tmp_path, identity)
    (root / "new.txt").write_text("intent to add\n")
    git(root, "add", "-N", "new.txt")  # an extended-flag entry: git writes index version 3
    expected = staged(root)
    assert ours(root) == expected
    git(root, "update-index", "--index-version", "4")  # prefix-compressed paths
    assert ours(root) == expected
    assert load_stat_cache(root / ".git").tree_id is None, "git's staging invalidated the tree"


def test_the_sidecar_is_ignored_once_the_index_changes(tmp_path, identity):
    root = make_folder(tmp_path, identity)
    sidecar = root / ".git" / SIDECAR_NAME
    assert sidecar.exists()
    before = sidecar.read_bytes()
    git(root, "rm", "--cached", "-q", "a.txt")
    assert b"a.txt" not in ours(root)
    assert sidecar.read_bytes() != before, "the sidecar was not remade for the new index"
    assert sorted(load_stat_cache(root / ".git").by_directory) == [b"dir", b"dir-x", b"dir/sub"]


def test_a_damaged_index_is_an_empty_cache_and_the_next_commit_repairs_it(tmp_path, identity):
    root = make_folder(tmp_path, identity)
    index = root / ".git" / "index"
    index.write_bytes(index.read_bytes()[:-1] + b"\0")
    assert load_stat_cache(root / ".git").entries == {}
    assert commit_pending(FolderRepo.open(root), identity).committed == []
    assert ours(root) == staged(root) and len(staged(root)) == 4
    git_fsck_strict(root)


def test_save_and_load_round_trip(tmp_path):
    git_dir = tmp_path / "repo" / ".git"
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    entries = {
        b"a": (bytes(range(40)), b"\x01" * 20),
        b"long/" + b"x" * 5000: (bytes(40), b"\x02" * 20),  # longer than the 12-bit name length field
    }
    save_stat_cache(git_dir, entries, None)
    assert load_stat_cache(git_dir).entries == entries
