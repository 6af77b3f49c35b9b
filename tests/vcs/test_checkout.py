import os
from pathlib import Path

import pytest
from dulwich.index import commit_tree
from dulwich.object_store import MemoryObjectStore
from dulwich.objects import Blob

from ocsync_tui.vcs.checkout import (
    EXECUTABLE_MODE,
    FILE_MODE,
    SYMLINK_MODE,
    CheckoutError,
    FolderFiles,
    TreeFile,
    checkout_changes,
    flatten_tree,
    is_temp_name,
    temp_name,
)
from ocsync_tui.vcs.disk_naming import CASE_SENSITIVE, DiskNaming, probe_disk_naming

FOLDS_CASE = DiskNaming(folds_case=True, normalizes_unicode=False)
NORMALIZES = DiskNaming(folds_case=False, normalizes_unicode=True)


def build(store: MemoryObjectStore, files: dict[bytes, bytes | tuple[int, bytes]]) -> dict[bytes, TreeFile]:
    """Store a tree of {path: content or (mode, content)}; return it flattened."""
    entries = []
    for path, value in files.items():
        mode, content = value if isinstance(value, tuple) else (FILE_MODE, value)
        blob = Blob.from_string(content)
        store.add_object(blob)
        entries.append((path, blob.id, mode))
    return flatten_tree(store, commit_tree(store, entries))


def numbered_copies(path: bytes, component: int):
    parts = path.split(b"/")
    for n in range(1, 100):
        yield b"/".join(parts[:component] + [parts[component] + b".copy%d" % n] + parts[component + 1 :])


def checkout(root, store, old, new, naming=CASE_SENSITIVE, conflict_names=numbered_copies):
    changed = {p for p in old.keys() | new.keys() if old.get(p) != new.get(p)}
    return checkout_changes(root, store, old, new, changed, conflict_copy_names=conflict_names, naming=naming)


def disk_files(root: Path) -> dict[str, bytes]:
    """Every file and symlink under root (symlinks as 'link:' + target)."""
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(directory, d))]:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            found[rel] = b"link:" + os.fsencode(os.readlink(path)) if os.path.islink(path) else Path(path).read_bytes()
    return found


@pytest.fixture
def store():
    return MemoryObjectStore()


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    return folder


def test_writes_files_directories_modes_and_symlinks(store, root):
    new = build(store, {b"a.txt": b"A", b"d/e/f.txt": b"F", b"run.sh": (EXECUTABLE_MODE, b"#!/bin/sh\n"),
                        b"link": (SYMLINK_MODE, b"d/e/f.txt")})
    result = checkout(root, store, {}, new)
    assert disk_files(root) == {"a.txt": b"A", "d/e/f.txt": b"F", "run.sh": b"#!/bin/sh\n", "link": b"link:d/e/f.txt"}
    assert os.access(root / "run.sh", os.X_OK) and not os.access(root / "a.txt", os.X_OK)
    assert sorted(result.settled) == sorted(new)
    assert result.kept_local == [] and result.relocated == {}


def test_updates_and_deletes_removing_empty_parents_only(store, root):
    old = build(store, {b"keep/x": b"1", b"gone/deep/y": b"2", b"keep/z": b"3", b"mode": b"m"})
    checkout(root, store, {}, old)
    new = build(store, {b"keep/x": b"1 changed", b"mode": (EXECUTABLE_MODE, b"m")})
    result = checkout(root, store, old, new)
    assert disk_files(root) == {"keep/x": b"1 changed", "mode": b"m"}
    assert not (root / "gone").exists() and (root / "keep").is_dir()
    assert os.access(root / "mode", os.X_OK)
    assert sorted(result.deleted) == [b"gone/deep/y", b"keep/z"]


def test_never_overwrites_or_deletes_content_the_old_tree_did_not_record(store, root):
    old = build(store, {b"edited": b"old", b"deleted-by-peer": b"old", b"made-executable": b"x"})
    checkout(root, store, {}, old)
    (root / "edited").write_bytes(b"user's edit")
    (root / "deleted-by-peer").write_bytes(b"user's other edit")
    os.chmod(root / "made-executable", 0o755)
    (root / "new-here").write_bytes(b"user's new file")
    new = build(store, {b"edited": b"peer", b"made-executable": b"y", b"new-here": b"peer's new file"})
    result = checkout(root, store, old, new)
    assert disk_files(root) == {
        "edited": b"user's edit",
        "edited.copy1": b"peer",
        "deleted-by-peer": b"user's other edit",
        "made-executable": b"x",
        "made-executable.copy1": b"y",
        "new-here": b"user's new file",
        "new-here.copy1": b"peer's new file",
    }
    assert sorted(result.kept_local) == [b"deleted-by-peer", b"edited", b"made-executable", b"new-here"]
    assert result.relocated == {p: p + b".copy1" for p in [b"edited", b"made-executable", b"new-here"]}
    assert result.settled == []


def test_a_file_missing_on_disk_is_written(store, root):
    old = build(store, {b"f": b"old"})
    new = build(store, {b"f": b"new"})
    result = checkout(root, store, old, new)
    assert disk_files(root) == {"f": b"new"} and result.settled == [b"f"]


def test_a_symlink_replaced_by_a_directory_is_removed_before_the_directory_is_made(store, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    old = build(store, {b"evil": (SYMLINK_MODE, os.fsencode(outside))})
    checkout(root, store, {}, old)
    new = build(store, {b"evil/file": b"payload"})
    checkout(root, store, old, new)
    assert list(outside.iterdir()) == []
    assert (root / "evil").is_dir() and not (root / "evil").is_symlink()
    assert (root / "evil" / "file").read_bytes() == b"payload"


def test_a_symlink_kept_as_local_content_relocates_the_directory_behind_it(store, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "evil")  # not recorded by the old tree: the user's own
    new = build(store, {b"evil/file": b"payload", b"evil/sub/g": b"G"})
    result = checkout(root, store, {}, new)
    assert list(outside.iterdir()) == []
    assert result.relocated == {b"evil/file": b"evil.copy1/file", b"evil/sub/g": b"evil.copy1/sub/g"}
    assert (root / "evil.copy1" / "file").read_bytes() == b"payload"
    assert os.readlink(root / "evil") == str(outside)


def test_a_symlink_from_the_same_tree_is_never_followed_on_a_case_folding_disk(store, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    new = build(store, {b"Evil": (SYMLINK_MODE, os.fsencode(outside)), b"evil/file": b"payload"})
    result = checkout(root, store, {}, new, naming=FOLDS_CASE)
    assert list(outside.iterdir()) == []
    assert result.relocated == {b"evil/file": b"evil.copy1/file"}
    assert disk_files(root) == {"Evil": b"link:" + os.fsencode(outside), "evil.copy1/file": b"payload"}


def test_a_user_directory_in_the_way_of_a_file_relocates_the_file(store, root):
    (root / "name").mkdir()
    (root / "name" / "mine").write_bytes(b"user")
    new = build(store, {b"name": b"peer's file"})
    result = checkout(root, store, {}, new)
    assert result.relocated == {b"name": b"name.copy1"}
    assert disk_files(root) == {"name/mine": b"user", "name.copy1": b"peer's file"}


def test_a_taken_conflict_copy_name_is_skipped(store, root):
    (root / "name").mkdir()
    (root / "name" / "mine").write_bytes(b"user")
    (root / "name.copy1").write_bytes(b"a user file that happens to have this name")
    new = build(store, {b"name": b"peer's file", b"name.copy2": b"tracked"})
    result = checkout(root, store, {}, new)
    assert result.relocated == {b"name": b"name.copy3"}
    assert (root / "name.copy1").read_bytes() == b"a user file that happens to have this name"


@pytest.mark.parametrize(
    "naming, kept, incoming",
    [
        (FOLDS_CASE, b"README", b"readme"),
        (FOLDS_CASE, b"Docs/a", b"docs/b"),
        (NORMALIZES, "caf\u00e9".encode(), "cafe\u0301".encode()),
    ],
)
def test_paths_colliding_on_this_disk_become_conflict_copies(store, root, naming, kept, incoming):
    old = build(store, {kept: b"kept"})
    checkout(root, store, {}, old)
    new = build(store, {kept: b"kept", incoming: b"incoming"})
    result = checkout(root, store, old, new, naming=naming)
    [(tree_path, disk_path)] = result.relocated.items()
    assert tree_path == incoming
    assert (root / os.fsdecode(kept)).read_bytes() == b"kept"
    assert (root / os.fsdecode(disk_path)).read_bytes() == b"incoming"
    assert sorted(result.written) == [disk_path]


def test_no_collisions_on_a_case_sensitive_disk(store, root):
    new = build(store, {b"README": b"1", b"readme": b"2"})
    result = checkout(root, store, {}, new)
    assert result.relocated == {} and disk_files(root) == {"README": b"1", "readme": b"2"}


def test_rerun_after_an_interrupted_checkout_finishes_it(store, root):
    old = build(store, {b"a": b"old a", b"b": b"old b", b"c": b"old c"})
    checkout(root, store, {}, old)
    new = build(store, {b"a": b"new a", b"b": b"new b"})
    # As a kill would leave it: a written, b's temp file half written, c not yet deleted.
    (root / "a").write_bytes(b"new a")
    (root / os.fsdecode(temp_name(b"b"))).write_bytes(b"new")
    result = checkout(root, store, old, new)
    assert disk_files(root) == {"a": b"new a", "b": b"new b"}
    assert sorted(result.settled) == [b"a", b"b", b"c"] and sorted(result.written) == [b"b"]
    assert not any(is_temp_name(os.fsencode(name)) for name in os.listdir(root))


def test_folder_files_reads_what_is_on_disk(store, root, tmp_path):
    (root / "f").write_bytes(b"hello")
    os.symlink("target", root / "l")
    (root / "d").mkdir()
    (root / "d" / "x").write_bytes(b"")
    (root / "empty").mkdir()
    os.mkfifo(root / "fifo")
    os.symlink(tmp_path, root / "out")
    with FolderFiles(root) as files:
        assert files.read(b"f") == TreeFile(FILE_MODE, Blob.from_string(b"hello").id)
        assert files.read(b"l") == TreeFile(SYMLINK_MODE, Blob.from_string(b"target").id)
        assert files.read(b"missing") is None and files.read(b"missing/deeper") is None
        assert files.read(b"d") is files.read(b"fifo") is files.read(b"out/f") is files.read(b"f/x")
        assert files.read(b"d") is not None and files.read(b"empty") is None


def test_a_missing_folder_is_a_clear_error(store, tmp_path):
    with pytest.raises(CheckoutError, match="cannot open folder"):
        checkout(tmp_path / "nope", store, {}, build(store, {b"a": b"1"}))


def test_this_disk_is_probed_case_sensitive(tmp_path):
    assert probe_disk_naming(tmp_path) == CASE_SENSITIVE
    assert list(tmp_path.iterdir()) == []


def test_disk_naming_keys():
    assert FOLDS_CASE.key(b"ReadMe") == FOLDS_CASE.key(b"README") != CASE_SENSITIVE.key(b"README")
    assert NORMALIZES.key("cafe\u0301".encode()) == NORMALIZES.key("caf\u00e9".encode())
    assert FOLDS_CASE.key(b"\xff") == b"\xff"


def test_an_empty_directory_in_the_way_is_replaced(store, root):
    (root / "name" / "empty").mkdir(parents=True)
    new = build(store, {b"name/empty": b"a file now"})
    result = checkout(root, store, {}, new)
    assert result.relocated == {} and disk_files(root) == {"name/empty": b"a file now"}


def test_a_name_too_long_for_this_disk_becomes_a_shorter_conflict_copy(store, root):
    long_name = "\u00e9" * 200  # 400 bytes, past this disk's limit; eCryptfs already stops at 143
    new = build(store, {long_name.encode() + b"/f": b"in a long folder", long_name.encode() + b".txt": b"long file"})
    result = checkout(root, store, {}, new, conflict_names=lambda path, component: iter([shortened(path, component)]))
    assert sorted(result.relocated) == sorted(new)
    assert sorted(disk_files(root).values()) == [b"in a long folder", b"long file"]


def shortened(path: bytes, component: int) -> bytes:
    parts = path.split(b"/")
    parts[component] = parts[component][:100] + (b".folder-copy" if component < len(parts) - 1 else b".copy")
    return b"/".join(parts)


def test_a_file_written_by_the_user_during_a_batch_is_kept_and_the_staged_version_discarded(root):
    (root / "edited.txt").write_bytes(b"old")
    with FolderFiles(root) as files:
        seen = files.read(b"edited.txt")
        files.stage(b"edited.txt", TreeFile(FILE_MODE, b"0" * 40), [b"incoming"], seen)
        files.stage(b"new.txt", TreeFile(FILE_MODE, b"1" * 40), [b"fresh"], None)
        (root / "edited.txt").write_bytes(b"the user's edit, made while the batch was written")
        assert files.finish_staged() == [b"edited.txt"]
    assert (root / "edited.txt").read_bytes() == b"the user's edit, made while the batch was written"
    assert (root / "new.txt").read_bytes() == b"fresh"
    assert sorted(os.listdir(root)) == ["edited.txt", "new.txt"], "no temp file is left behind"
