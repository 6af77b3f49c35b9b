import subprocess
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from dulwich.object_store import MemoryObjectStore
from dulwich.objects import Blob, Tree
from dulwich.repo import Repo

from ocsync_tui.errors import OcsyncError
from ocsync_tui.vcs.paths import (
    SYMLINK_MODE,
    UnsafePathError,
    ValidatedTrees,
    collision_key,
    validate_tree,
    validate_tree_path,
)
from ocsync_tui.vcs.checkout import is_temp_name, temp_name
from tests.vcs.history_builder import write_unchecked_object


@pytest.mark.parametrize(
    "path",
    [
        b"a.txt",
        b"dir/sub/file",
        "é/ü ñ.txt".encode(),
        b".gitignore",
        b".github/workflows/ci.yml",
        b".gitfoo",
        b"git",
        b"dir/.ocsync-folder",
        b"back\\slash",
        b"trailing dot.",
        b"...",
        b"git~2",
        b"ocsync~5",
        b"sub/ocsync~1",
        b"x" * 255,
        b".OCSYNC-TMP-0123456789abcdef",
        b"x.ocsync-tmp-0123456789abcdef",
    ],
)
def test_ordinary_paths_are_accepted(path: bytes) -> None:
    assert validate_tree_path(path) == path.decode("utf-8")


@pytest.mark.parametrize(
    "path, reason",
    [
        (b"", "empty component"),
        (b"/etc/passwd", "absolute"),
        (b"a//b", "empty component"),
        (b"a/", "empty component"),
        (b".", "not a file name"),
        (b"..", "not a file name"),
        (b"a/../../b", "not a file name"),
        (b"a/./b", "not a file name"),
        (b".git", ".git"),
        (b".GIT", ".git"),
        (b".Git/config", ".git"),
        (b"x/.git/hooks/post-checkout", ".git"),
        (b".git.", ".git"),
        (b".git ", ".git"),
        (b".git. .", ".git"),
        (b"git~1", ".git"),
        (b"GIT~1/config", ".git"),
        (".g\u200cit".encode(), ".git"),
        ("\ufeff.git".encode(), ".git"),
        (".git\u200e".encode(), ".git"),
        (b".git::$INDEX_ALLOCATION", ".git"),
        (b"a\\.git", ".git"),
        (b"nul\0byte", "NUL"),
        (b"\xff\xfe", "UTF-8"),
        (b"ok/\xc3(", "UTF-8"),
        (b".ocsync-folder", "folder marker"),
        (b".OCSYNC-Folder", "folder marker"),
        (b".ocsync-folder.", "folder marker"),
        (b"ocsync~1", "folder marker"),
        (b"dir/" + b"x" * 256, "longer than 255 bytes"),
        (b"OCSYNC~4", "folder marker"),
        (temp_name(b"a.txt"), "temp files"),
        (b"dir/" + temp_name(b"x") + b"/f", "temp files"),
        (b".ocsync-tmp-", "temp files"),
    ],
)
def test_unsafe_paths_are_refused_with_a_one_line_message_naming_them(path: bytes, reason: str) -> None:
    with pytest.raises(UnsafePathError) as caught:
        validate_tree_path(path)
    message = str(caught.value)
    assert isinstance(caught.value, OcsyncError)
    assert reason in message
    assert repr(path.decode("utf-8", "backslashreplace")) in message
    assert "\n" not in message


def test_a_symlink_named_gitmodules_is_refused_but_a_file_is_not() -> None:
    assert validate_tree_path(b"sub/.gitmodules") == "sub/.gitmodules"
    with pytest.raises(UnsafePathError, match="gitmodules"):
        validate_tree_path(b"sub/.GitModules", mode=SYMLINK_MODE)
    assert validate_tree_path(b".gitmodules/inside", mode=SYMLINK_MODE) == ".gitmodules/inside"
    for alias in (b"GITMOD~2", b"gi7eba~12", b".gitmodules. ", b".git\xe2\x80\x8cmodules"):
        with pytest.raises(UnsafePathError, match="gitmodules"):
            validate_tree_path(alias, mode=SYMLINK_MODE)


def _raw_tree(store: MemoryObjectStore, entries: list[tuple[bytes, int, bytes]]) -> bytes:
    """A tree written byte for byte as given: unsorted, duplicated or hostile entries included."""
    raw = b"".join(b"%o %s\0%s" % (mode, name, bytes.fromhex(sha.decode())) for name, mode, sha in entries)
    tree = Tree.from_raw_string(Tree.type_num, raw)
    store.add_object(tree)
    return tree.id


@pytest.fixture
def store() -> MemoryObjectStore:
    return MemoryObjectStore()


@pytest.fixture
def blob_id(store: MemoryObjectStore) -> bytes:
    blob = Blob.from_string(b"content\n")
    store.add_object(blob)
    return blob.id


def test_a_path_longer_than_any_system_call_accepts_is_refused(store: MemoryObjectStore, blob_id: bytes) -> None:
    folder = b"d" * 200 + b"/"
    assert validate_tree_path(folder * 20 + b"b" * 75)  # 4095 bytes
    with pytest.raises(UnsafePathError, match="longer than 4096 bytes"):
        validate_tree_path(folder * 20 + b"b" * 97)
    tree_id = _raw_tree(store, [(b"b" * 200, 0o100644, blob_id)])
    for _ in range(20):
        tree_id = _raw_tree(store, [(b"d" * 200, 0o40000, tree_id)])
    with pytest.raises(UnsafePathError, match="longer than 4096 bytes"):
        validate_tree(store, tree_id)


def test_folders_nested_deeper_than_git_tools_walk_are_refused(store: MemoryObjectStore, blob_id: bytes) -> None:
    tree_id = _raw_tree(store, [(b"f", 0o100644, blob_id)])
    for depth in range(1, 1281):
        tree_id = _raw_tree(store, [(b"d", 0o40000, tree_id)])
        if depth == 1279:
            validate_tree(store, tree_id)
    with pytest.raises(UnsafePathError, match="nested 1280 deep or more"):
        validate_tree(store, tree_id)
    assert validate_tree_path(b"d/" * 1279 + b"f")
    with pytest.raises(UnsafePathError, match="nested 1280 deep or more"):
        validate_tree_path(b"d/" * 1280 + b"f")


def test_a_tree_of_ordinary_names_and_modes_is_valid(store: MemoryObjectStore, blob_id: bytes) -> None:
    inner = _raw_tree(store, [(b".ocsync-folder", 0o100644, blob_id), (b"run.sh", 0o100755, blob_id)])
    root = _raw_tree(
        store,
        [(b"a.txt", 0o100644, blob_id), (b"dir", 0o40000, inner), (b"link", 0o120000, blob_id)],
    )
    validate_tree(store, root)


@pytest.mark.parametrize(
    "name, mode, reason",
    [
        (b"..", 0o100644, "not a file name"),
        (b".git", 0o100644, ".git"),
        (b".GIT", 0o100644, ".git"),
        (b".git.", 0o100644, ".git"),
        (b"git~1", 0o100644, ".git"),
        (b"a/b", 0o100644, "contains '/'"),
        (b"module", 0o160000, "submodule"),
        (b"group-writable", 0o100664, "unsupported mode"),
        (b".gitmodules", 0o120000, "gitmodules"),
    ],
)
def test_hostile_nested_entries_are_refused(
    store: MemoryObjectStore, blob_id: bytes, name: bytes, mode: int, reason: str
) -> None:
    inner = _raw_tree(store, [(name, mode, blob_id)])
    root = _raw_tree(store, [(b"ok.txt", 0o100644, blob_id), (b"sub", 0o40000, inner)])
    with pytest.raises(UnsafePathError, match=reason) as caught:
        validate_tree(store, root)
    assert repr(("sub/" + name.decode()))[1:-1] in str(caught.value)


def test_a_git_directory_entry_is_refused_before_anything_inside_it_is_read(
    store: MemoryObjectStore, blob_id: bytes
) -> None:
    hooks = _raw_tree(store, [(b"post-checkout", 0o100755, blob_id)])
    root = _raw_tree(store, [(b".Git", 0o40000, hooks)])
    with pytest.raises(UnsafePathError, match=r"'\.Git'.*\.git"):
        validate_tree(store, root)


def test_the_folder_marker_is_refused_only_at_the_top(store: MemoryObjectStore, blob_id: bytes) -> None:
    root = _raw_tree(store, [(b".OCSYNC-FOLDER", 0o100644, blob_id)])
    with pytest.raises(UnsafePathError, match="folder marker"):
        validate_tree(store, root)


def test_a_temp_file_name_is_refused_at_any_depth_exactly_as_the_scanner_ignores_it(
    store: MemoryObjectStore, blob_id: bytes
) -> None:
    """The scanner never sees a name like checkout's temp files: a peer could plant content nobody sees."""
    planted = temp_name(b"x")
    assert is_temp_name(planted)
    inner = _raw_tree(store, [(planted, 0o100644, blob_id)])
    root = _raw_tree(store, [(b"sub", 0o40000, inner)])
    with pytest.raises(UnsafePathError, match="temp files"):
        validate_tree(store, root)
    assert not is_temp_name(b".OCSYNC-TMP-x")
    validate_tree(store, _raw_tree(store, [(b".OCSYNC-TMP-x", 0o100644, blob_id)]))


def _copy_of(store: MemoryObjectStore, *object_ids: bytes) -> MemoryObjectStore:
    copy = MemoryObjectStore()
    for object_id in object_ids:
        copy.add_object(store[object_id])
    return copy


def test_known_valid_subtrees_are_not_read_again_but_new_trees_are(store: MemoryObjectStore, blob_id: bytes) -> None:
    known_valid = ValidatedTrees()
    subtree = _raw_tree(store, [(b"f", 0o100644, blob_id)])
    validate_tree(store, _raw_tree(store, [(b"sub", 0o40000, subtree)]), known_valid=known_valid)
    next_root = _raw_tree(store, [(b"new", 0o100644, blob_id), (b"sub", 0o40000, subtree)])
    only_the_new_root = _copy_of(store, next_root)
    validate_tree(only_the_new_root, next_root, known_valid=known_valid)
    with pytest.raises(UnsafePathError, match="missing"):
        validate_tree(only_the_new_root, next_root)

    hostile_subtree = _raw_tree(store, [(b".git", 0o100644, blob_id)])
    hostile_root = _raw_tree(store, [(b"other", 0o40000, hostile_subtree), (b"sub", 0o40000, subtree)])
    with pytest.raises(UnsafePathError, match=".git"):
        validate_tree(store, hostile_root, known_valid=known_valid)


def test_a_tree_that_failed_is_not_recorded_as_valid(store: MemoryObjectStore, blob_id: bytes) -> None:
    known_valid = ValidatedTrees()
    subtree = _raw_tree(store, [(b"f", 0o100644, blob_id)])
    hostile = _raw_tree(store, [(b"..", 0o100644, blob_id)])
    # Checked after `z`: its valid subtree is read first.
    hostile_root = _raw_tree(store, [(b"a", 0o40000, hostile), (b"z", 0o40000, subtree)])
    with pytest.raises(UnsafePathError):
        validate_tree(store, hostile_root, known_valid=known_valid)
    root = _raw_tree(store, [(b"z", 0o40000, subtree)])
    with pytest.raises(UnsafePathError, match="missing"):
        validate_tree(_copy_of(store, root), root, known_valid=known_valid)
    validate_tree(store, root, known_valid=known_valid)
    validate_tree(_copy_of(store, root), root, known_valid=known_valid)


def test_a_known_subtree_at_a_new_place_gets_the_checks_that_depend_on_the_place(
    store: MemoryObjectStore, blob_id: bytes
) -> None:
    known_valid = ValidatedTrees()
    marker_inside = _raw_tree(store, [(b".ocsync-folder", 0o100644, blob_id)])
    validate_tree(store, _raw_tree(store, [(b"sub", 0o40000, marker_inside)]), known_valid=known_valid)
    with pytest.raises(UnsafePathError, match="folder marker"):
        validate_tree(store, marker_inside, known_valid=known_valid)

    long_name = _raw_tree(store, [(b"b" * 255, 0o100644, blob_id)])
    validate_tree(store, _raw_tree(store, [(b"a", 0o40000, long_name)]), known_valid=known_valid)
    deep = _raw_tree(store, [(b"e", 0o40000, long_name)])
    for _ in range(20):
        deep = _raw_tree(store, [(b"d" * 200, 0o40000, deep)])
    with pytest.raises(UnsafePathError, match="longer than 4096 bytes"):
        validate_tree(store, deep, known_valid=known_valid)


def test_a_file_and_a_directory_of_one_name_are_refused(store: MemoryObjectStore, blob_id: bytes) -> None:
    inner = _raw_tree(store, [(b"x", 0o100644, blob_id)])
    root = _raw_tree(store, [(b"a", 0o120000, blob_id), (b"a", 0o40000, inner)])
    with pytest.raises(UnsafePathError, match="share a name"):
        validate_tree(store, root)


@pytest.mark.parametrize(
    "names",
    [[b"b", b"a"], [b"a", b"a"]],
    ids=["unsorted", "duplicated"],
)
def test_unsorted_or_duplicated_entries_are_refused(
    store: MemoryObjectStore, blob_id: bytes, names: list[bytes]
) -> None:
    root = _raw_tree(store, [(name, 0o100644, blob_id) for name in names])
    with pytest.raises(UnsafePathError, match="unsorted or duplicated"):
        validate_tree(store, root)


def test_a_directory_entry_naming_a_blob_or_a_missing_object_is_refused(
    store: MemoryObjectStore, blob_id: bytes
) -> None:
    with pytest.raises(UnsafePathError, match="not a tree"):
        validate_tree(store, _raw_tree(store, [(b"dir", 0o40000, blob_id)]))
    with pytest.raises(UnsafePathError, match="missing"):
        validate_tree(store, _raw_tree(store, [(b"dir", 0o40000, b"1" * 40)]))


@pytest.mark.parametrize(
    "raw_entry",
    [b"0100644 a\0", b"100644 nul\0inside\0", b"100644 cut-short\0\1\2"],
    ids=["zero-padded-mode", "nul-in-name", "truncated-id"],
)
def test_a_malformed_tree_is_refused(tmp_path: Path, raw_entry: bytes) -> None:
    repo = Repo.init(str(tmp_path), mkdir=False)
    blob = Blob.from_string(b"x")
    repo.object_store.add_object(blob)
    raw = raw_entry + (bytes.fromhex(blob.id.decode()) if raw_entry.endswith(b"\0") else b"")
    tree_id = write_unchecked_object(tmp_path, b"tree", raw)
    with pytest.raises(UnsafePathError, match="malformed"):
        validate_tree(Repo(str(tmp_path)).object_store, tree_id)


def test_collision_key_equates_case_and_unicode_normalisation_only() -> None:
    assert collision_key("Docs/Readme.md") == collision_key("docs/README.MD")
    assert collision_key(unicodedata.normalize("NFC", "café")) == collision_key(unicodedata.normalize("NFD", "café"))
    assert collision_key("Å") == collision_key("å")
    assert collision_key("readme") != collision_key("read me")
    assert collision_key("a/b") != collision_key("a-b")


def test_every_name_real_git_refuses_we_refuse_too(tmp_path) -> None:
    names = [
        b".git", b".GIT", b".git.", b".git ", b"git~1", b"GIT~1", ".g\u200cit".encode(), "\ufeff.git".encode(),
        b".git::$INDEX_ALLOCATION", b"a\\.git", b".", b"..", b"ok.txt", b".gitignore", b"git~2", b".gitx",
    ]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    repo = Repo(str(tmp_path))
    blob = Blob.from_string(b"x")
    repo.object_store.add_object(blob)
    tree_of = {name: _raw_tree(repo.object_store, [(name, 0o100644, blob.id)]) for name in names}
    report = subprocess.run(
        ["git", "-C", str(tmp_path), "fsck", "--strict", "--no-dangling"], capture_output=True, text=True
    )
    refused_by_git = {name for name, tree_id in tree_of.items() if tree_id.decode() in report.stdout + report.stderr}
    refused_by_us = set()
    for name, tree_id in tree_of.items():
        try:
            validate_tree(repo.object_store, tree_id)
        except UnsafePathError:
            refused_by_us.add(name)
    assert {b".git", b"git~1", b"..", b"."} <= refused_by_git  # the comparison means something
    assert refused_by_git <= refused_by_us
    assert not refused_by_us & {b"ok.txt", b".gitignore", b"git~2", b".gitx"}


_tricky_component = st.text(alphabet=".gitGIT~1 :\\\u200c\ufeffocsyn-fldermup", min_size=1, max_size=14)


@settings(max_examples=200, deadline=None)
@given(
    components=st.lists(_tricky_component, min_size=1, max_size=4),
    mode=st.sampled_from([0o100644, 0o100755, 0o120000]),
)
def test_a_path_is_accepted_exactly_when_a_tree_holding_it_is(components: list[str], mode: int) -> None:
    """The scanner checks paths, merges check trees: they must never disagree."""
    store = MemoryObjectStore()
    blob = Blob.from_string(b"x")
    store.add_object(blob)
    names = [component.encode() for component in components]
    tree = Tree()
    tree.add(names[-1], mode, blob.id)
    for name in reversed(names[:-1]):
        store.add_object(tree)
        parent = Tree()
        parent.add(name, 0o040000, tree.id)
        tree = parent
    store.add_object(tree)
    try:
        validate_tree(store, tree.id)
        tree_ok = True
    except UnsafePathError:
        tree_ok = False
    try:
        validate_tree_path(b"/".join(names), mode)
        path_ok = True
    except UnsafePathError:
        path_ok = False
    assert path_ok == tree_ok
