import hashlib
import os
import random
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from dulwich.index import commit_tree
from dulwich.object_format import SHA1
from dulwich.objects import Blob, Commit, Tree
from dulwich.pack import OFS_DELTA, REF_DELTA, pack_header_chunks, pack_object_header
from dulwich.pack import create_delta as create_dulwich_delta
from dulwich.repo import Repo
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsync_tui.vcs.bundle import (
    QUARANTINE_PREFIX,
    BundleError,
    MissingPrerequisites,
    create_bundle,
    quarantined_import,
)
from ocsync_tui.vcs.pack import PackEntry, add_entries_to_store, object_id
from tests.conftest import git_fsck_strict

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Tester",
    "GIT_AUTHOR_EMAIL": "tester@ocsync.invalid",
    "GIT_COMMITTER_NAME": "Tester",
    "GIT_COMMITTER_EMAIL": "tester@ocsync.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


def git(repo: Path, *args: str, input: bytes | None = None) -> bytes:
    result = subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True, env=GIT_ENV)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr.decode()}"
    return result.stdout


@dataclass
class Folder:
    """What create_bundle and quarantined_import need of a FolderRepo."""

    path: Path
    repo: Repo

    @property
    def git_dir(self) -> Path:
        return self.path / ".git"

    def head(self) -> bytes | None:
        try:
            return self.repo.refs[b"refs/heads/main"]
        except KeyError:
            return None


_opened: list[Repo] = []


@pytest.fixture(autouse=True)
def close_repositories():
    yield
    while _opened:
        _opened.pop().close()


def open_folder(path: Path) -> Folder:
    _opened.append(Repo(str(path)))
    return Folder(path, _opened[-1])


def new_folder(path: Path) -> Folder:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    return open_folder(path)


def commit_file(folder: Folder, name: str, content: bytes, when: int) -> bytes:
    """One commit per file change, as the committer makes them."""
    target = folder.path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    git(folder.path, "add", name)
    stamp = f"{when} +0000"
    subprocess.run(
        ["git", "-C", str(folder.path), "commit", "-q", "-m", f"{name}\n\nedited"],
        env={**GIT_ENV, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp},
        check=True,
    )
    return git(folder.path, "rev-parse", "HEAD").strip()


def clone_at(source: Folder, commit: bytes, path: Path) -> Folder:
    """A receiver that has exactly the history up to `commit`."""
    git(source.path.parent, "clone", "-q", "--no-checkout", str(source.path), str(path))
    git(path, "update-ref", "refs/heads/main", commit.decode())
    git(path, "symbolic-ref", "HEAD", "refs/heads/main")
    git(path, "remote", "remove", "origin")
    git(path, "reflog", "expire", "--expire=now", "--all")
    git(path, "gc", "-q", "--prune=now")
    return open_folder(path)


def objects_listing(folder: Folder) -> list[tuple[str, int]]:
    root = folder.git_dir / "objects"
    return sorted(
        (os.path.relpath(os.path.join(directory, name), root), os.path.getsize(os.path.join(directory, name)))
        for directory, _, files in os.walk(root)
        for name in files
    )


def receiver_packs_are_sound(receiver: Folder) -> None:
    """git verifies every pack, each object is in it once, and dulwich reads every object back."""
    store = Repo(str(receiver.path)).object_store
    for index_path in (receiver.git_dir / "objects" / "pack").glob("*.idx"):
        git(receiver.path, "verify-pack", str(index_path))
    for pack in store.packs:
        ids = list(pack.index)
        assert len(ids) == len(set(ids))
        for sha in ids:
            store.get_raw(sha)
    store.close()


def quarantines(folder: Folder) -> list[Path]:
    return list(folder.git_dir.glob(QUARANTINE_PREFIX + "*"))


@pytest.fixture
def history(tmp_path: Path):
    """A folder with nested directories, several versions of files, and a merge."""
    folder = new_folder(tmp_path / "source")
    rng = random.Random(5)
    big = bytearray(rng.randbytes(300_000))
    commits = [commit_file(folder, "big.bin", bytes(big), 1_700_000_000)]
    commits.append(commit_file(folder, "docs/a.txt", b"alpha\n" * 100, 1_700_000_010))
    commits.append(commit_file(folder, "docs/deep/b.txt", b"beta\n" * 100, 1_700_000_020))
    git(folder.path, "checkout", "-q", "-b", "side")
    side = commit_file(folder, "docs/side.txt", b"side\n", 1_700_000_030)
    git(folder.path, "checkout", "-q", "main")
    big[1234] ^= 0xFF
    commits.append(commit_file(folder, "big.bin", bytes(big), 1_700_000_040))
    stamp = "1700000050 +0000"
    subprocess.run(
        ["git", "-C", str(folder.path), "merge", "-q", "--no-ff", "-m", "merge side", "side"],
        env={**GIT_ENV, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp},
        check=True,
    )
    commits.append(git(folder.path, "rev-parse", "HEAD").strip())
    commits.append(commit_file(folder, "docs/deep/b.txt", b"beta\n" * 99 + b"gamma\n", 1_700_000_060))
    return open_folder(folder.path), commits, side


def test_full_bundle_is_accepted_by_git_and_clones(history, tmp_path: Path) -> None:
    folder, commits, _ = history
    out = tmp_path / "full.bundle"
    info = create_bundle(folder, [], out)

    assert info.head == commits[-1].decode()
    assert info.prerequisites == []
    assert info.commit_count == 7
    assert info.size == out.stat().st_size
    assert info.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    git(folder.path, "bundle", "verify", str(out))
    git(tmp_path, "clone", "-q", str(out), "cloned")
    git_fsck_strict(tmp_path / "cloned")
    assert git(tmp_path / "cloned", "rev-parse", "HEAD").strip() == commits[-1]
    assert (tmp_path / "cloned" / "big.bin").read_bytes() == (folder.path / "big.bin").read_bytes()
    assert list(tmp_path.glob(".full.bundle.*")) == []


def test_thin_bundle_is_fetched_by_git_with_prerequisites_present(history, tmp_path: Path) -> None:
    folder, commits, _ = history
    receiver = clone_at(folder, commits[2], tmp_path / "receiver")
    out = tmp_path / "thin.bundle"
    info = create_bundle(folder, [commits[2].decode()[:10]], out)

    assert info.prerequisites == [commits[2].decode()]
    assert info.commit_count == 4  # the big.bin edit, the side commit, the merge, the last edit
    git(receiver.path, "bundle", "verify", str(out))
    git(receiver.path, "fetch", "-q", str(out), "main:refs/remotes/peer/main")
    assert git(receiver.path, "rev-parse", "refs/remotes/peer/main").strip() == commits[-1]
    git_fsck_strict(receiver.path)
    # Unpacked by git, the edited big.bin must match byte for byte.
    assert git(receiver.path, "cat-file", "blob", "refs/remotes/peer/main:big.bin") == (
        folder.path / "big.bin"
    ).read_bytes()


def test_bundle_verify_fails_without_the_prerequisites(history, tmp_path: Path) -> None:
    folder, commits, _ = history
    out = tmp_path / "thin.bundle"
    create_bundle(folder, [commits[3].decode()], out)
    empty = new_folder(tmp_path / "empty")
    result = subprocess.run(["git", "-C", str(empty.path), "bundle", "verify", str(out)], capture_output=True)
    assert result.returncode != 0


def test_one_byte_edit_of_a_large_file_gives_a_tiny_bundle(tmp_path: Path) -> None:
    folder = new_folder(tmp_path / "source")
    content = bytearray(random.Random(1).randbytes(4 << 20))
    first = commit_file(folder, "video.bin", bytes(content), 1_700_000_000)
    content[3_000_000] ^= 0x01
    commit_file(folder, "video.bin", bytes(content), 1_700_000_001)
    folder = open_folder(folder.path)
    out = tmp_path / "edit.bundle"
    info = create_bundle(folder, [first.decode()], out)
    assert info.size < 1024

    receiver = clone_at(folder, first, tmp_path / "receiver")
    with quarantined_import(receiver, out) as imported:
        assert imported.object_store[imported.head].tree
    git(receiver.path, "update-ref", "refs/heads/main", info.head)
    git_fsck_strict(receiver.path)
    assert git(receiver.path, "cat-file", "blob", "main:video.bin") == bytes(content)


def test_a_renamed_large_file_is_not_sent_again(tmp_path: Path) -> None:
    folder = new_folder(tmp_path / "source")
    content = random.Random(2).randbytes(1 << 20)
    first = commit_file(folder, "old/name.bin", content, 1_700_000_000)
    commit_file(folder, "new/name.bin", content, 1_700_000_001)  # the add of a rename comes first
    git(folder.path, "rm", "-q", "old/name.bin")
    git(folder.path, "commit", "-q", "-m", "delete old/name.bin")
    folder = open_folder(folder.path)
    out = tmp_path / "rename.bundle"
    info = create_bundle(folder, [first.decode()], out)
    assert info.size < 1024

    receiver = clone_at(folder, first, tmp_path / "receiver")
    git(receiver.path, "bundle", "verify", "-q", str(out))
    with quarantined_import(receiver, out) as imported:
        assert len(imported.new_commits) == 2
    git(receiver.path, "update-ref", "refs/heads/main", info.head)
    git_fsck_strict(receiver.path)
    assert git(receiver.path, "cat-file", "blob", "main:new/name.bin") == content


def test_our_thin_bundle_imports_through_the_quarantine(history, tmp_path: Path) -> None:
    folder, commits, side = history
    receiver = clone_at(folder, commits[2], tmp_path / "receiver")
    out = tmp_path / "thin.bundle"
    create_bundle(folder, [commits[2].decode()], out)

    with quarantined_import(receiver, out) as imported:
        assert imported.head == commits[-1]
        assert imported.prerequisites == [commits[2]]
        assert set(imported.new_commits) == {commits[3], side, commits[4], commits[5]}
        position = {commit: index for index, commit in enumerate(imported.new_commits)}
        assert position[commits[3]] < position[commits[4]] and position[side] < position[commits[4]]
        assert imported.object_store[commits[5]].parents == [commits[4]]
        assert commits[5] not in receiver.repo.object_store  # not visible before the block ends
    assert commits[5] in receiver.repo.object_store
    assert quarantines(receiver) == []
    git(receiver.path, "update-ref", "refs/heads/main", commits[-1].decode())
    git_fsck_strict(receiver.path)


@pytest.mark.parametrize("version", ["2", "3"])
def test_bundles_made_by_git_import_too(history, tmp_path: Path, version: str) -> None:
    folder, commits, _ = history
    receiver = clone_at(folder, commits[1], tmp_path / "receiver")
    out = tmp_path / "git.bundle"
    git(folder.path, "bundle", "create", "-q", f"--version={version}", str(out), "main", f"^{commits[1].decode()}")

    with quarantined_import(receiver, out) as imported:
        assert imported.head == commits[-1]
        assert imported.prerequisites == [commits[1]]
    git(receiver.path, "update-ref", "refs/heads/main", commits[-1].decode())
    git_fsck_strict(receiver.path)


def test_full_bundle_imports_into_an_empty_repository(history, tmp_path: Path) -> None:
    folder, commits, _ = history
    out = tmp_path / "full.bundle"
    create_bundle(folder, [], out)
    receiver = new_folder(tmp_path / "receiver")
    with quarantined_import(receiver, out) as imported:
        assert len(imported.new_commits) == 7
        assert imported.new_commits[0] == commits[0]
        assert imported.new_commits[-1] == commits[-1]
    git(receiver.path, "update-ref", "refs/heads/main", commits[-1].decode())
    git_fsck_strict(receiver.path)


def test_empty_difference_gives_a_valid_bundle_carrying_the_ref(history, tmp_path: Path) -> None:
    folder, commits, _ = history
    receiver = clone_at(folder, commits[-1], tmp_path / "receiver")
    out = tmp_path / "empty.bundle"
    info = create_bundle(folder, [commits[-1].decode()], out)
    assert (info.commit_count, info.object_count, info.prerequisites) == (0, 0, [commits[-1].decode()])

    git(receiver.path, "bundle", "verify", str(out))
    git(receiver.path, "fetch", "-q", str(out), "main:refs/remotes/peer/main")
    before = objects_listing(receiver)
    with quarantined_import(receiver, out) as imported:
        assert imported.head == commits[-1]
        assert imported.new_commits == []
    assert objects_listing(receiver) == before


def test_unknown_revisions_and_empty_folders_are_clear_errors(history, tmp_path: Path) -> None:
    folder, _, _ = history
    with pytest.raises(BundleError, match="unknown revision 'deadbeef'"):
        create_bundle(folder, ["deadbeef"], tmp_path / "x.bundle")
    with pytest.raises(BundleError, match="no commits yet"):
        create_bundle(new_folder(tmp_path / "empty"), [], tmp_path / "x.bundle")
    assert not (tmp_path / "x.bundle").exists()
    with pytest.raises(BundleError, match="cannot write a bundle in"):
        create_bundle(folder, [], tmp_path / "missing" / "x.bundle")
    (tmp_path / "taken").mkdir()
    with pytest.raises(BundleError, match="cannot write the bundle"):
        create_bundle(folder, [], tmp_path / "taken")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty", "source", "taken"]


def test_an_ambiguous_revision_is_a_clear_error(history, tmp_path: Path) -> None:
    folder, commits, _ = history
    tree = folder.repo.object_store[commits[0]].tree
    by_prefix: dict[bytes, bytes] = {}
    entries = []
    for number in range(5000):  # two commit ids share their first 4 hex digits long before this
        commit = Commit()
        commit.tree = tree
        commit.author = commit.committer = b"Tester <tester@ocsync.invalid>"
        commit.author_time = commit.commit_time = 1_700_000_000
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = b"try %d\n" % number
        entries.append(PackEntry(commit.id, commit.type_num, commit.as_raw_string()))
        if commit.id[:4] in by_prefix:
            break
        by_prefix[commit.id[:4]] = commit.id
    add_entries_to_store(folder.repo.object_store, entries)
    with pytest.raises(BundleError, match="is ambiguous"):
        create_bundle(folder, [commit.id[:4].decode()], tmp_path / "x.bundle")


@pytest.fixture
def thin_case(history, tmp_path: Path):
    folder, commits, _ = history
    receiver = clone_at(folder, commits[2], tmp_path / "receiver")
    out = tmp_path / "thin.bundle"
    create_bundle(folder, [commits[2].decode()], out)
    return receiver, out


def assert_refused(receiver: Folder, bundle: Path, error: type[BundleError], match: str) -> None:
    before = objects_listing(receiver)
    with pytest.raises(error, match=match):
        with quarantined_import(receiver, bundle):
            pass
    assert objects_listing(receiver) == before
    assert quarantines(receiver) == []


def pack_start(bundle: bytes) -> int:
    return bundle.index(b"\n\n") + 2


def test_truncated_bundles_are_refused_and_nothing_is_written(thin_case, tmp_path: Path) -> None:
    receiver, out = thin_case
    data = out.read_bytes()
    rng = random.Random(11)
    cuts = [1, pack_start(data) - 1, pack_start(data), pack_start(data) + 5, len(data) - 1, len(data) - 20]
    cuts += [rng.randrange(pack_start(data), len(data)) for _ in range(8)]
    for cut in cuts:
        broken = tmp_path / "broken.bundle"
        broken.write_bytes(data[:cut])
        assert_refused(receiver, broken, BundleError, "truncated|malformed|corrupt|not a git bundle")


def test_corrupted_bundles_are_refused_and_nothing_is_written(thin_case, tmp_path: Path) -> None:
    receiver, out = thin_case
    data = out.read_bytes()
    rng = random.Random(12)
    for _ in range(12):
        position = rng.randrange(pack_start(data), len(data))
        broken = bytearray(data)
        broken[position] ^= 1 << rng.randrange(8)
        (tmp_path / "broken.bundle").write_bytes(bytes(broken))
        assert_refused(receiver, tmp_path / "broken.bundle", BundleError, "corrupt|truncated|lacks|unexpected")


def test_trailing_garbage_is_refused(thin_case, tmp_path: Path) -> None:
    receiver, out = thin_case
    (tmp_path / "long.bundle").write_bytes(out.read_bytes() + b"junk")
    assert_refused(receiver, tmp_path / "long.bundle", BundleError, "corrupt|unexpected data")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage\n" * 10,
        b"# v4 git bundle\n\n",
        b"# v2 git bundle\n" + b"x" * 100_000,
        b"# v2 git bundle\n-nothex nope\n\n",
        b"# v3 git bundle\n@filter=blob:none\n\n",
        b"# v2 git bundle\n" + b"a" * 40 + b" refs/heads/one\n" + b"b" * 40 + b" refs/heads/two\n\n",
    ],
)
def test_wrong_headers_are_refused(thin_case, tmp_path: Path, content: bytes) -> None:
    receiver, _ = thin_case
    (tmp_path / "bad.bundle").write_bytes(content)
    assert_refused(receiver, tmp_path / "bad.bundle", BundleError, "not a git bundle|malformed|capability|refs")


def test_missing_prerequisites_are_named(history, tmp_path: Path) -> None:
    folder, commits, _ = history
    out = tmp_path / "thin.bundle"
    create_bundle(folder, [commits[3].decode()], out)
    receiver = clone_at(folder, commits[1], tmp_path / "receiver")
    before = objects_listing(receiver)
    with pytest.raises(MissingPrerequisites) as caught:
        with quarantined_import(receiver, out):
            pass
    # The side branch forked at commits[2], so that commit is a boundary too.
    assert sorted(caught.value.missing) == sorted([commits[2].decode(), commits[3].decode()])
    assert commits[3].decode()[:12] in str(caught.value) and "lacks 2 commit(s)" in str(caught.value)
    assert objects_listing(receiver) == before


def test_an_error_inside_the_block_leaves_the_main_store_untouched(thin_case) -> None:
    receiver, out = thin_case
    before = objects_listing(receiver)
    with pytest.raises(RuntimeError):
        with quarantined_import(receiver, out) as imported:
            assert imported.new_commits
            raise RuntimeError("merge refused")
    assert objects_listing(receiver) == before
    assert quarantines(receiver) == []


def test_stale_quarantines_are_cleaned_by_the_next_import(thin_case) -> None:
    receiver, out = thin_case
    stale = receiver.git_dir / (QUARANTINE_PREFIX + "crashed")
    (stale / "objects" / "pack").mkdir(parents=True)
    (stale / "objects" / "pack" / "tmp_pack_x").write_bytes(b"PACK")
    with quarantined_import(receiver, out):
        assert not stale.exists()
    git_fsck_strict(receiver.path)


def test_a_bundle_lacking_objects_is_refused(history, tmp_path: Path) -> None:
    folder, commits, _ = history
    receiver = clone_at(folder, commits[2], tmp_path / "receiver")
    # Claims commits[2] as its only prerequisite but leaves out what commits[3] changed.
    out = tmp_path / "short.bundle"
    git(folder.path, "bundle", "create", "-q", str(out), "main", f"^{commits[3].decode()}")
    data = out.read_bytes().replace(commits[3], commits[2])
    (tmp_path / "lying.bundle").write_bytes(data)
    assert_refused(receiver, tmp_path / "lying.bundle", BundleError, "lacks")


PATHS = [b"a.txt", b"b.bin", b"docs/c.txt", b"docs/deep/d.txt", b"other/e.txt"]
edit_step = st.tuples(
    st.sampled_from(["write", "mutate", "delete", "rename", "chmod", "revert", "swap"]),
    st.integers(0, len(PATHS) - 1),
    st.integers(0, len(PATHS) - 1),
    st.binary(min_size=0, max_size=600),
)


def build_history(folder: Folder, steps, seed: int) -> list[bytes]:
    """One commit per step, per-file as ocsync commits; returns the commit ids, oldest first."""
    rng = random.Random(seed)
    store = folder.repo.object_store
    files: dict[bytes, tuple[int, bytes]] = {}
    earlier_versions: dict[bytes, list[tuple[int, bytes]]] = {}
    commits: list[bytes] = []
    for when, (action, first, second, data) in enumerate(steps, start=1_700_000_000):
        path, other = PATHS[first], PATHS[second]
        if path in files:
            earlier_versions.setdefault(path, []).append(files[path])
        if action == "revert" and path in earlier_versions:
            files[path] = rng.choice(earlier_versions[path])
        elif action == "swap" and path in files and other in files:
            files[path], files[other] = files[other], files[path]
        elif action == "write" or path not in files:
            files[path] = (0o100644, data * rng.randrange(1, 20))
        elif action == "mutate":
            mode, content = files[path]
            cut = rng.randrange(len(content) + 1)
            files[path] = (mode, content[:cut] + data + content[cut + rng.randrange(50) :])
        elif action == "delete" and len(files) > 1:
            del files[path]
        elif action == "rename" and other not in files:
            files[other] = files.pop(path)
        elif action == "chmod":
            mode, content = files[path]
            files[path] = (0o100755 if mode == 0o100644 else 0o100644, content)
        commits.append(commit_files(store, files, commits[-1:], when, b"step\n"))
    folder.repo.refs[b"refs/heads/main"] = commits[-1]
    return commits


def commit_files(
    store, files: dict[bytes, tuple[int, bytes]], parents: list[bytes], when: int, message: bytes
) -> bytes:
    """Store a commit whose tree holds exactly `files` (path → (mode, content)); return its id."""
    blobs = []
    for name, (mode, content) in files.items():
        blob = Blob.from_string(content)
        store.add_object(blob)
        blobs.append((name, blob.id, mode))
    commit = Commit()
    commit.tree = commit_tree(store, blobs)
    commit.parents = parents
    commit.author = commit.committer = b"Tester <tester@ocsync.invalid>"
    commit.author_time = commit.commit_time = when
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = message
    store.add_object(commit)
    return commit.id


@settings(max_examples=10, deadline=None)
@given(steps=st.lists(edit_step, min_size=2, max_size=14), seed=st.integers(0, 1000), data=st.data())
def test_random_histories_round_trip_through_thin_bundles(tmp_path_factory, steps, seed, data) -> None:
    root = tmp_path_factory.mktemp("history")
    source = new_folder(root / "source")
    commits = build_history(source, steps, seed)
    since = data.draw(st.sampled_from(commits))
    git(source.path, "update-ref", "refs/since", since.decode())
    receiver = new_folder(root / "receiver")
    git(receiver.path, "fetch", "-q", "--update-head-ok", str(source.path), "refs/since:refs/heads/main")

    out = root / "thin.bundle"
    info = create_bundle(source, [since.decode()], out)
    with quarantined_import(receiver, out) as imported:
        assert imported.head == commits[-1]
        assert imported.new_commits == commits[commits.index(since) + 1 :]
    assert info.commit_count == len(commits) - commits.index(since) - 1
    # With main at the bundle's head, fsck proves every object of every new commit arrived intact.
    git(receiver.path, "update-ref", "refs/heads/main", commits[-1].decode())
    git_fsck_strict(receiver.path)
    receiver_packs_are_sound(receiver)


def commit_states(folder: Folder, states: list[dict[bytes, bytes]]) -> list[bytes]:
    """One commit per state of the whole folder (path → content), oldest first."""
    store = folder.repo.object_store
    commits: list[bytes] = []
    for when, files in enumerate(states, start=1_700_000_000):
        regular_files = {name: (0o100644, content) for name, content in files.items()}
        commits.append(commit_files(store, regular_files, commits[-1:], when, b"state\n"))
    folder.repo.refs[b"refs/heads/main"] = commits[-1]
    return commits


def similar_contents(count: int) -> list[bytes]:
    """Distinct contents that are deltas of each other, so the bundle writer deltifies them."""
    shared = random.Random(3).randbytes(4000)
    return [shared + b"version %d\n" % number for number in range(count)]


_FILLER = {b"file%02d.txt" % number: b"%d\n" % number for number in range(30)}
_X, _Y, _Z = similar_contents(3)


@pytest.mark.parametrize(
    "states",
    [
        # A file reverted to the version the receiver has.
        [{**_FILLER, b"a": _X}, {**_FILLER, b"a": _Y}, {**_FILLER, b"a": _X}],
        # Two files swap contents the receiver has.
        [{**_FILLER, b"a": _X, b"b": _Y}, {**_FILLER, b"a": _Y, b"b": _X}],
        # A short-lived file: the root tree becomes the receiver's again.
        [{**_FILLER, b"a": _X}, {**_FILLER, b"a": _X, b"tmp": _Y}, {**_FILLER, b"a": _X}, {**_FILLER, b"a": _Z}],
        # A file takes another's content, which then comes back under a new name.
        [{**_FILLER, b"a": _X, b"b": _Y}, {**_FILLER, b"a": _Y, b"b": _Y}, {**_FILLER, b"c": _X, b"b": _Z}],
    ],
    ids=["revert", "swap", "short-lived-file", "take-and-rename"],
)
def test_objects_the_receiver_has_are_not_sent_so_no_delta_can_loop(tmp_path: Path, states) -> None:
    """A copy of a receiver's object in the pack, deltified against its own REF_DELTA child, was a loop:
    git refused the pack and dulwich raised DeltaCycle reading it after import."""
    source = new_folder(tmp_path / "source")
    commits = commit_states(source, states)
    receiver = clone_at(source, commits[0], tmp_path / "receiver")
    out = tmp_path / "thin.bundle"
    create_bundle(source, [commits[0].decode()], out)

    data = out.read_bytes()
    check = clone_at(source, commits[0], tmp_path / "git-check")
    git(check.path, "index-pack", "--stdin", "--fix-thin", input=data[pack_start(data) :])
    with quarantined_import(receiver, out) as imported:
        assert imported.new_commits == commits[1:]
    git(receiver.path, "update-ref", "refs/heads/main", commits[-1].decode())
    receiver_packs_are_sound(receiver)
    git_fsck_strict(receiver.path)


def raw_pack(objects: list[tuple[int, bytes | int | None, bytes]]) -> bytes:
    """A pack of (pack type, delta base: binary id or offset distance, payload) as given, however wrong."""
    body = bytearray(b"".join(pack_header_chunks(len(objects))))
    for type_num, base, payload in objects:
        body += pack_object_header(type_num, base, len(payload), SHA1) + zlib.compress(payload)
    return bytes(body + hashlib.sha1(body).digest())


def crafted_bundle(path: Path, prerequisite: bytes, head: bytes, pack: bytes) -> Path:
    path.write_bytes(b"# v2 git bundle\n-" + prerequisite + b" base\n" + head + b" refs/heads/main\n\n" + pack)
    return path


@pytest.fixture
def hostile_case(tmp_path: Path):
    """A receiver holding one blob, and a new blob and commit a crafted bundle may send."""
    source = new_folder(tmp_path / "source")
    had, new = similar_contents(2)
    commits = commit_states(source, [{b"had": had}, {b"had": had, b"new": new}])
    receiver = clone_at(source, commits[0], tmp_path / "receiver")
    store = source.repo.object_store
    commit = store[commits[1]]
    parts = {
        "had": Blob.from_string(had),
        "new": Blob.from_string(new),
        "tree": store[commit.tree],
        "commit": commit,
    }
    return receiver, commits[0], parts


def ref(obj) -> bytes:
    return bytes.fromhex(obj.id.decode())


def whole_object(obj) -> tuple[int, None, bytes]:
    return obj.type_num, None, obj.as_raw_string()


def test_a_ref_delta_pair_that_refer_to_each_other_is_refused(hostile_case, tmp_path: Path) -> None:
    """The receiver has `had`: indexing resolves the loop from outside, but reading the pack would not."""
    receiver, base, parts = hostile_case
    had, new = parts["had"].data, parts["new"].data
    pack = raw_pack(
        [
            whole_object(parts["commit"]),
            whole_object(parts["tree"]),
            (REF_DELTA, ref(parts["had"]), b"".join(create_dulwich_delta(had, new))),
            (REF_DELTA, ref(parts["new"]), b"".join(create_dulwich_delta(new, had))),
        ]
    )
    bundle = crafted_bundle(tmp_path / "loop.bundle", base, parts["commit"].id, pack)
    assert_refused(receiver, bundle, BundleError, "corrupt")


def test_a_delta_against_itself_is_refused(hostile_case, tmp_path: Path) -> None:
    receiver, base, parts = hostile_case
    had = parts["had"].data
    for self_based in (
        (REF_DELTA, ref(parts["had"]), b"".join(create_dulwich_delta(had, had))),
        (OFS_DELTA, 0, b"".join(create_dulwich_delta(had, had))),
    ):
        sound = [whole_object(parts[name]) for name in ("commit", "tree", "new")]
        pack = raw_pack([*sound, self_based])
        bundle = crafted_bundle(tmp_path / "self.bundle", base, parts["commit"].id, pack)
        assert_refused(receiver, bundle, BundleError, "corrupt")


@pytest.mark.parametrize(
    "damage",
    [
        "delta-out-of-range",
        "offset-before-pack",
        "bad-zlib",
        "wrong-size",
        "bad-checksum",
        "garbage-commit",
        "unknown-type",
        "unreachable-garbage-tree",
        "unreachable-garbage-commit",
    ],
)
def test_broken_packs_are_refused_with_a_bundle_error(hostile_case, tmp_path: Path, damage: str) -> None:
    receiver, base, parts = hostile_case
    objects = [whole_object(parts["commit"]), whole_object(parts["tree"]), whole_object(parts["new"])]
    head = parts["commit"].id
    if damage == "delta-out-of-range":
        # Base size 4010 (right), target size 64, then a copy of 64 bytes from offset 100_000 of that base.
        objects[2] = (REF_DELTA, ref(parts["had"]), bytes([0xAA, 0x1F, 0x40, 0x97, 0xA0, 0x86, 0x01, 0x40]))
    elif damage == "offset-before-pack":
        objects[2] = (OFS_DELTA, 1 << 20, b"\x10\x10\x90\x10")
    elif damage == "garbage-commit":
        garbage = b"tree nonsense\n\nnot a commit"
        head = object_id(Commit.type_num, garbage)
        objects[0] = (Commit.type_num, None, garbage)
    elif damage == "unknown-type":
        objects[2] = (5, None, parts["new"].data)
    elif damage == "unreachable-garbage-tree":
        objects.append((Tree.type_num, None, b"100644 a name with no end"))
    elif damage == "unreachable-garbage-commit":
        objects.append((Commit.type_num, None, b"no headers at all"))
    pack = raw_pack(objects)
    if damage == "bad-zlib":
        pack = pack.replace(zlib.compress(parts["new"].data), zlib.compress(parts["new"].data)[:-6] + b"\xff" * 6)
        pack = pack[:-20] + hashlib.sha1(pack[:-20]).digest()
    elif damage == "wrong-size":
        true_header = pack_object_header(Blob.type_num, None, len(parts["new"].data), SHA1)
        pack = pack.replace(bytes(true_header), bytes(pack_object_header(Blob.type_num, None, 17, SHA1)))
        pack = pack[:-20] + hashlib.sha1(pack[:-20]).digest()
    elif damage == "bad-checksum":
        pack = pack[:-1] + bytes([pack[-1] ^ 1])
    bundle = crafted_bundle(tmp_path / "broken.bundle", base, head, pack)
    assert_refused(receiver, bundle, BundleError, "corrupt|lacks|truncated")


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_a_damaged_repository_gives_a_bundle_error_not_a_crash(tmp_path: Path, damage: str) -> None:
    source = new_folder(tmp_path / "source")
    commits = commit_states(source, [{b"a": _X}, {b"a": _Y}])
    blob_id = Blob.from_string(_Y).id.decode()
    loose = source.git_dir / "objects" / blob_id[:2] / blob_id[2:]
    os.chmod(loose, 0o644)
    if damage == "garbage":
        loose.write_bytes(b"x\x9c not zlib at all")
    else:
        loose.unlink()
    out = tmp_path / "out.bundle"
    with pytest.raises(BundleError, match="cannot read the folder's history") as caught:
        create_bundle(source, [commits[0].decode()], out)
    assert "\n" not in str(caught.value)
    assert not out.exists() and list(tmp_path.glob(".out.bundle.*")) == []


def test_a_damaged_receiving_repository_gives_a_bundle_error_not_a_crash(tmp_path: Path) -> None:
    states = [{b"a": _X}, {b"a": _Y}]
    source = new_folder(tmp_path / "source")
    commits = commit_states(source, states)
    out = tmp_path / "thin.bundle"
    create_bundle(source, [commits[0].decode()], out)
    receiver = new_folder(tmp_path / "receiver")
    assert commit_states(receiver, states[:1]) == commits[:1]
    loose = receiver.git_dir / "objects" / commits[0][:2].decode() / commits[0][2:].decode()
    os.chmod(loose, 0o644)
    loose.write_bytes(b"x\x9c not zlib at all")
    with pytest.raises(BundleError, match="cannot read the folder's history"):
        with quarantined_import(receiver, out):
            pass
    assert quarantines(receiver) == []


def test_commits_the_receiver_has_are_not_new_even_when_the_bundle_carries_them(history, tmp_path: Path) -> None:
    folder, commits, side = history
    receiver = clone_at(folder, commits[2], tmp_path / "receiver")
    out = tmp_path / "whole.bundle"
    git(folder.path, "bundle", "create", "-q", str(out), "main")  # the whole history, no prerequisites
    with quarantined_import(receiver, out) as imported:
        assert sorted(imported.new_commits) == sorted([commits[3], commits[4], commits[5], side])
    git(receiver.path, "update-ref", "refs/heads/main", commits[-1].decode())
    git_fsck_strict(receiver.path)
