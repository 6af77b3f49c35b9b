"""Bundles no honest peer sends: refused with a clear error, and nothing written anywhere."""

import os
import subprocess
from pathlib import Path

import pytest

from ocsync_tui.errors import OcsyncError
from ocsync_tui.vcs.apply import apply_bundle
from ocsync_tui.vcs.folder import FolderRepo, init_folder
from tests.conftest import git_fsck_strict
from tests.vcs.bundle_craft import AUTHOR, COMMIT, FILE_MODE, SYMLINK_MODE, TREE_MODE, Crafter
from tests.vcs.devices import make_device, verify_bundle


def tree_snapshot(root: Path) -> dict[str, object]:
    """Every entry under root: file content, symlink target or 'dir'."""
    found: dict[str, object] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory, name)
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = path.read_bytes()
    return found


def repo_snapshot(root: Path) -> dict[str, object]:
    git = root / ".git"
    refs = subprocess.run(["git", "-C", str(root), "for-each-ref"], capture_output=True, text=True, check=True)
    return {
        "HEAD": (git / "HEAD").read_bytes(),
        "refs": refs.stdout,
        "objects": sorted(str(p.relative_to(git)) for p in (git / "objects").rglob("*")),
        "work": {k: v for k, v in tree_snapshot(root).items() if not k.startswith(".git")},
        "journal": (git / "ocsync-journal").exists(),
    }


@pytest.fixture
def scene(tmp_path, identity):
    """A folder with one committed file, and a place outside it that must stay empty."""
    return make_scene(tmp_path, identity, {"mine.txt": b"my file\n"})


@pytest.fixture
def empty_scene(tmp_path, identity):
    """An ocsync folder with no files yet, and a place outside it that must stay empty."""
    return make_scene(tmp_path, identity, {})


def make_scene(tmp_path, identity, files: dict[str, bytes]):
    root = tmp_path / "folder"
    root.mkdir()
    for name, content in files.items():
        (root / name).write_bytes(content)
    init_folder(root, identity)
    outside = tmp_path / "outside"
    outside.mkdir()
    return root, outside


def commit_of(crafter: Crafter, entries) -> bytes:
    return crafter.commit(crafter.tree(entries))


def ok_entry(crafter: Crafter) -> tuple[bytes, int, bytes]:
    return (b"ok.txt", FILE_MODE, crafter.blob(b"harmless\n"))


def hostile_trees(crafter: Crafter, outside: Path) -> dict[str, bytes]:
    blob = crafter.blob(b"[core]\n\tfsmonitor = touch /tmp/pwned\n")
    config_tree = crafter.tree([(b"config", FILE_MODE, blob)])
    return {
        "dotdot directory": [(b"..", TREE_MODE, crafter.tree([(b"escaped", FILE_MODE, blob)]))],
        "dotdot file": [(b"..", FILE_MODE, blob)],
        "dot": [(b".", TREE_MODE, config_tree)],
        "absolute": [(b"/abs", FILE_MODE, blob)],
        "slash inside a name": [(b"a/../../escaped", FILE_MODE, blob)],
        "empty name": [(b"", FILE_MODE, blob)],
        ".git": [(b".git", TREE_MODE, config_tree)],
        ".GIT": [(b".GIT", TREE_MODE, config_tree)],
        ".Git/config": [(b".Git", TREE_MODE, config_tree)],
        ".git as a file": [(b".git", FILE_MODE, blob)],
        "nested .git": [(b"sub", TREE_MODE, crafter.tree([(b".gIt", TREE_MODE, config_tree)]))],
        "NUL": [(b"a\0b", FILE_MODE, blob)],
        "symlink and directory of one name": [
            (b"evil", SYMLINK_MODE, crafter.blob(os.fsencode(outside))),
            (b"evil", TREE_MODE, crafter.tree([(b"file", FILE_MODE, blob)])),
        ],
        "duplicate file names": [(b"twice", FILE_MODE, blob), (b"twice", FILE_MODE, crafter.blob(b"other"))],
    }


HOSTILE_CASES = list(hostile_trees(Crafter(), Path("/x")))


def assert_refused_and_untouched(root: Path, outside: Path, bundle: Path, identity, **kwargs) -> OcsyncError:
    before = repo_snapshot(root)
    with pytest.raises(OcsyncError) as refused:
        apply_bundle(FolderRepo.open(root), identity, bundle, **kwargs)
    message = str(refused.value)
    assert message and "\n" not in message
    assert repo_snapshot(root) == before
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in root.parent.iterdir()) == sorted(["folder", "outside", "home", bundle.name])
    git_fsck_strict(root)
    return refused.value


@pytest.mark.parametrize("case", HOSTILE_CASES)
def test_a_hostile_path_at_the_head_is_refused(scene, identity, case):
    root, outside = scene
    crafter = Crafter()
    entries = hostile_trees(crafter, outside)[case] + [ok_entry(crafter)]
    bundle = crafter.write_bundle(root.parent / "hostile.bundle", commit_of(crafter, entries))
    assert_refused_and_untouched(root, outside, bundle, identity)


@pytest.mark.parametrize("case", [".git", "dotdot directory", "symlink and directory of one name"])
def test_a_hostile_path_in_an_earlier_commit_is_refused(scene, identity, case):
    root, outside = scene
    crafter = Crafter()
    hostile = commit_of(crafter, hostile_trees(crafter, outside)[case] + [ok_entry(crafter)])
    head = crafter.commit(crafter.tree([ok_entry(crafter)]), [hostile], when=1_700_000_100)
    bundle = crafter.write_bundle(root.parent / "hostile.bundle", head)
    assert_refused_and_untouched(root, outside, bundle, identity)


def test_a_commit_with_a_parent_after_its_author_is_refused(scene, identity):
    root, outside = scene
    crafter = Crafter()
    earlier = commit_of(crafter, [ok_entry(crafter)])
    signature = b"author %s 1 +0000\ncommitter %s 1 +0000\n" % (AUTHOR, AUTHOR)
    head = crafter._add(
        COMMIT, b"tree " + crafter.tree([ok_entry(crafter)]) + b"\n" + signature + b"parent " + earlier + b"\n\nlate\n"
    )
    bundle = crafter.write_bundle(root.parent / "hostile.bundle", head)
    refused = assert_refused_and_untouched(root, outside, bundle, identity)
    assert "does not begin with its tree and parents" in str(refused)


def valid_bundle_bytes(crafter: Crafter) -> tuple[bytes, bytes]:
    head = crafter.commit(crafter.files({b"a.txt": b"A" * 5000, b"d/b.txt": os.urandom(3000).hex().encode()}))
    return head, crafter.pack_bytes()


@pytest.mark.parametrize("damage", ["truncated", "cut to the header", "flipped byte", "bad checksum", "no pack"])
def test_a_damaged_pack_is_refused(scene, identity, damage):
    root, outside = scene
    crafter = Crafter()
    head, pack = valid_bundle_bytes(crafter)
    middle = len(pack) // 2
    damaged = {
        "truncated": pack[:-100],
        "cut to the header": pack[:12],
        "flipped byte": pack[:middle] + bytes([pack[middle] ^ 0x40]) + pack[middle + 1 :],
        "bad checksum": pack[:-1] + bytes([pack[-1] ^ 1]),
        "no pack": b"",
    }[damage]
    bundle = crafter.write_bundle(root.parent / "damaged.bundle", head, pack=damaged)
    assert_refused_and_untouched(root, outside, bundle, identity)


@pytest.mark.parametrize("header", [b"", b"not a bundle\n", b"# v2 git bundle\nzzzz refs/heads/main\n\n"])
def test_a_malformed_bundle_header_is_refused(scene, identity, header):
    root, outside = scene
    bundle = root.parent / "junk.bundle"
    bundle.write_bytes(header + b"PACK")
    assert_refused_and_untouched(root, outside, bundle, identity)


@pytest.mark.parametrize("peer_name", ["../escape", "a/b", "", ".hidden", "x.lock", "with space", "HEAD~1"])
def test_a_peer_name_that_is_not_one_ref_component_is_refused(scene, identity, peer_name):
    root, outside = scene
    crafter = Crafter()
    head = crafter.commit(crafter.tree([ok_entry(crafter)]))
    bundle = crafter.write_bundle(root.parent / "fine.bundle", head)
    error = assert_refused_and_untouched(root, outside, bundle, identity, peer_name=peer_name)
    assert "peer name" in str(error)


def test_a_symlink_from_an_earlier_bundle_is_never_written_through(tmp_path, identity, empty_scene):
    root, outside = empty_scene
    crafter = Crafter()
    first = crafter.commit(crafter.tree([(b"evil", SYMLINK_MODE, crafter.blob(os.fsencode(outside)))]))
    first_bundle = crafter.write_bundle(tmp_path / "1.bundle", first)
    verify_bundle(root, first_bundle)
    apply_bundle(FolderRepo.open(root), identity, first_bundle)
    assert os.readlink(root / "evil") == str(outside)

    later = Crafter()
    evil_folder = later.files({b"evil/file": b"payload", b"evil/sub/deeper": b"more"})
    second = later.commit(evil_folder, [first], when=1_700_000_100)
    second_bundle = later.write_bundle(tmp_path / "2.bundle", second, [first])
    verify_bundle(root, second_bundle)
    apply_bundle(FolderRepo.open(root), identity, second_bundle)
    assert list(outside.iterdir()) == []
    assert not (root / "evil").is_symlink()
    assert (root / "evil" / "file").read_bytes() == b"payload"
    git_fsck_strict(root)


def test_a_symlink_the_user_made_is_never_written_through(tmp_path, identity, empty_scene):
    root, outside = empty_scene
    crafter = Crafter()
    head = crafter.commit(crafter.files({b"evil/file": b"payload"}))
    bundle = crafter.write_bundle(tmp_path / "1.bundle", head)
    verify_bundle(root, bundle)
    # Made after the folder's last commit and before the apply: the apply commits it first.
    os.symlink(outside, root / "evil")
    apply_bundle(FolderRepo.open(root), identity, bundle)
    assert list(outside.iterdir()) == []
    assert os.readlink(root / "evil") == str(outside)
    copies = [p for p in root.iterdir() if p.name.startswith("evil.sync-conflict-")]
    assert [(c / "file").read_bytes() for c in copies] == [b"payload"]
    git_fsck_strict(root)


def test_a_file_replacing_a_symlink_replaces_the_link_not_its_target(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_bytes(b"not the folder's\n")
    alice = make_device(tmp_path, "alice")
    os.symlink(outside / "target.txt", alice.root / "link")
    alice.commit()
    bob = make_device(tmp_path, "bob")
    bob.pull_from(alice, tmp_path / "bundles")
    assert os.readlink(bob.root / "link") == str(outside / "target.txt")
    alice.delete("link")
    alice.write("link", b"now a plain file\n")
    alice.commit()
    bob.pull_from(alice, tmp_path / "bundles")
    assert (outside / "target.txt").read_bytes() == b"not the folder's\n"
    assert not (bob.root / "link").is_symlink() and (bob.root / "link").read_bytes() == b"now a plain file\n"
    git_fsck_strict(bob.root)


def test_files_under_a_blocked_folder_move_to_one_copy_of_it(tmp_path, identity):
    root = tmp_path / "folder"
    root.mkdir()
    init_folder(root, identity)
    crafter = Crafter()
    first = crafter.commit(crafter.files({b"docs/a": b"A"}), when=1_700_000_000)
    head = crafter.commit(crafter.files({b"docs/a": b"A", b"docs/sub/b": b"B"}), [first], when=1_700_000_500)
    bundle = crafter.write_bundle(tmp_path / "docs.bundle", head)
    (root / "docs").write_bytes(b"a file of mine where the peer has a folder\n")
    apply_bundle(FolderRepo.open(root), identity, bundle)
    [copy] = [p.name for p in root.iterdir() if p.name.startswith("docs.sync-conflict-")]
    assert (root / copy / "a").read_bytes() == b"A" and (root / copy / "sub" / "b").read_bytes() == b"B"
    assert (root / "docs").read_bytes() == b"a file of mine where the peer has a folder\n"
    git_fsck_strict(root)

