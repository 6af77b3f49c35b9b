import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dulwich.objects import Blob, Commit, Tree
from dulwich.object_format import SHA1
from dulwich.pack import create_delta, pack_object_header
from dulwich.repo import Repo
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsync_tui.vcs.pack import (
    MAX_DELTA_DEPTH,
    STALE_AFTER_SECONDS,
    PackEntry,
    add_entries_to_store,
    object_id,
    write_pack,
)
from tests.conftest import git_fsck_strict

AUTHOR = b"Tester <tester@ocsync.invalid>"


def git(repo: Path, *args: str, input: bytes | None = None) -> bytes:
    result = subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def delta(base: bytes, target: bytes) -> bytes:
    return b"".join(create_delta(base, target))


def whole(obj) -> PackEntry:
    return PackEntry(obj.id, obj.type_num, obj.as_raw_string())


def delta_entry(obj, base) -> PackEntry:
    raw = obj.as_raw_string()
    return PackEntry(obj.id, obj.type_num, raw, base.id, delta(base.as_raw_string(), raw))


def commit_of(tree: Tree, parents: list[bytes], when: int) -> Commit:
    commit = Commit()
    commit.tree = tree.id
    commit.parents = parents
    commit.author = commit.committer = AUTHOR
    commit.author_time = commit.commit_time = when
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = b"edit\n"
    return commit


def file_history(versions: list[bytes]) -> list[PackEntry]:
    """One commit per version of big.bin, each blob and tree a delta of the previous one."""
    entries: list[PackEntry] = []
    previous = None
    parents: list[bytes] = []
    for when, content in enumerate(versions, start=1_700_000_000):
        blob = Blob.from_string(content)
        tree = Tree()
        tree.add(b"big.bin", 0o100644, blob.id)
        commit = commit_of(tree, parents, when)
        if previous is None:
            entries += [whole(blob), whole(tree)]
        else:
            entries += [delta_entry(blob, previous[0]), delta_entry(tree, previous[1])]
        entries.append(whole(commit))
        previous, parents = (blob, tree), [commit.id]
    return entries


def edited_versions(count: int, size: int = 20_000, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    content = bytearray(rng.randbytes(size))
    versions = []
    for _ in range(count):
        content[rng.randrange(size)] ^= 0xFF
        versions.append(bytes(content))
    return versions


def set_main(repo_path: Path, commit_id: bytes) -> None:
    git(repo_path, "update-ref", "refs/heads/main", commit_id.decode())


def pack_listing(repo_path: Path) -> list[str]:
    return sorted(os.listdir(repo_path / ".git" / "objects" / "pack"))


def test_store_pack_with_deltas_reads_back_and_passes_fsck(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path), mkdir=False)
    versions = edited_versions(5)
    entries = file_history(versions)
    add_entries_to_store(repo.object_store, entries)

    head = entries[-1].sha
    set_main(tmp_path, head)
    git_fsck_strict(tmp_path)
    assert git(tmp_path, "cat-file", "blob", "main:big.bin") == versions[-1]
    assert repo.object_store[entries[-3].sha].as_raw_string() == versions[-1]
    packs = [name for name in pack_listing(tmp_path) if name.endswith(".pack")]
    assert len(packs) == 1
    verify = git(tmp_path, "verify-pack", "-v", str(tmp_path / ".git/objects/pack" / packs[0])).decode()
    assert "chain length = 4: 2 objects" in verify  # the fifth blob and tree hang on four deltas


def test_store_pack_drops_deltas_against_objects_outside_it(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path), mkdir=False)
    entries = file_history(edited_versions(2))
    add_entries_to_store(repo.object_store, entries[:3])
    add_entries_to_store(repo.object_store, entries[3:])  # blob and tree deltas name bases of the first pack

    set_main(tmp_path, entries[-1].sha)
    git_fsck_strict(tmp_path)
    for pack in [name for name in pack_listing(tmp_path) if name.endswith(".pack")]:
        verify = git(tmp_path, "verify-pack", "-v", str(tmp_path / ".git/objects/pack" / pack)).decode()
        assert "chain length" not in verify


def test_store_pack_caps_delta_chains(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path), mkdir=False)
    entries = file_history(edited_versions(MAX_DELTA_DEPTH + 10, size=2_000))
    add_entries_to_store(repo.object_store, entries)

    set_main(tmp_path, entries[-1].sha)
    git_fsck_strict(tmp_path)
    pack = next(name for name in pack_listing(tmp_path) if name.endswith(".pack"))
    verify = git(tmp_path, "verify-pack", "-v", str(tmp_path / ".git/objects/pack" / pack)).decode()
    assert f"chain length = {MAX_DELTA_DEPTH}:" in verify
    assert f"chain length = {MAX_DELTA_DEPTH + 1}:" not in verify


def test_store_rejects_entries_that_do_not_match_their_id_and_writes_nothing(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path), mkdir=False)
    good, other = Blob.from_string(b"good\n"), Blob.from_string(b"other\n")
    lying = PackEntry(other.id, other.type_num, b"not other\n")
    with pytest.raises(ValueError, match="does not match"):
        add_entries_to_store(repo.object_store, [whole(good), lying])

    base, target = Blob.from_string(b"a" * 100), Blob.from_string(b"b" * 100)
    wrong_delta = PackEntry(target.id, 3, target.as_raw_string(), base.id, delta(base.data, b"c" * 100))
    with pytest.raises(ValueError, match="does not reproduce"):
        add_entries_to_store(repo.object_store, [whole(base), wrong_delta])
    assert pack_listing(tmp_path) == []


def test_store_writes_repeated_ids_once_and_same_pack_twice_is_harmless(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path), mkdir=False)
    blob = Blob.from_string(b"same\n")
    add_entries_to_store(repo.object_store, [whole(blob), whole(blob)])
    add_entries_to_store(repo.object_store, [whole(blob)])
    add_entries_to_store(repo.object_store, [])
    assert [name.rsplit(".", 1)[1] for name in pack_listing(tmp_path)] == ["idx", "pack"]
    assert git(tmp_path, "cat-file", "-p", blob.id.decode()) == b"same\n"
    assert git(tmp_path, "count-objects", "-v").count(b"in-pack: 1") == 1


def test_leftovers_of_a_killed_writer_are_removed_once_stale(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path), mkdir=False)
    entries = file_history(edited_versions(2))
    add_entries_to_store(repo.object_store, entries[:3])
    pack_dir = tmp_path / ".git" / "objects" / "pack"
    kept_before = pack_listing(tmp_path)
    stale_names = ["tmp_pack_a1", "tmp_idx_b2", "pack-" + "1" * 40 + ".pack"]
    fresh_names = ["tmp_pack_c3", "pack-" + "2" * 40 + ".pack"]
    long_ago = time.time() - STALE_AFTER_SECONDS - 60
    for name in stale_names + fresh_names:
        (pack_dir / name).write_bytes(b"PACK partial")
    for name in stale_names:
        os.utime(pack_dir / name, (long_ago, long_ago))
    for name in kept_before:
        os.utime(pack_dir / name, (long_ago, long_ago))

    add_entries_to_store(repo.object_store, entries[3:])
    listing = pack_listing(tmp_path)
    assert not set(stale_names) & set(listing)
    assert set(fresh_names) | set(kept_before) <= set(listing)
    set_main(tmp_path, entries[-1].sha)
    git_fsck_strict(tmp_path)


def test_a_delta_git_would_refuse_is_written_whole(tmp_path: Path) -> None:
    # The delta to an empty object is two bytes; git refuses deltas under four ("failed to apply delta").
    repo = Repo.init(str(tmp_path), mkdir=False)
    base, empty = Blob.from_string(b"\x00"), Blob.from_string(b"")
    add_entries_to_store(repo.object_store, [whole(base), delta_entry(empty, base)])
    assert git(tmp_path, "cat-file", "blob", empty.id.decode()) == b""
    for name in pack_listing(tmp_path):
        if name.endswith(".idx"):
            git(tmp_path, "verify-pack", str(tmp_path / ".git/objects/pack" / name))


def test_streamed_thin_pack_is_completed_by_git_index_pack(tmp_path: Path) -> None:
    receiver = tmp_path / "receiver"
    Repo.init(str(receiver), mkdir=True)
    entries = file_history(edited_versions(3))
    add_entries_to_store(Repo(str(receiver)).object_store, entries[:3])

    pack_path = tmp_path / "thin.pack"
    with open(pack_path, "wb") as out:
        written = write_pack(out, iter(entries[3:]), len(entries) - 3)
    assert len(written.index_entries) == 6
    git(receiver, "index-pack", "--stdin", "--fix-thin", input=pack_path.read_bytes())
    set_main(receiver, entries[-1].sha)
    git_fsck_strict(receiver)
    assert git(receiver, "cat-file", "blob", "main:big.bin") == Repo(str(receiver))[entries[-3].sha].data


def test_write_pack_refuses_a_wrong_object_count(tmp_path: Path) -> None:
    blob = Blob.from_string(b"x")
    with open(tmp_path / "p.pack", "wb") as out, pytest.raises(ValueError, match="promised 2"):
        write_pack(out, [whole(blob)], 2)


def test_write_pack_refuses_entries_that_could_make_a_delta_loop(tmp_path: Path) -> None:
    """Every base must lie earlier in the pack or outside it, so no chain of bases can come back round."""
    first, second = Blob.from_string(b"first version\n" * 50), Blob.from_string(b"second version\n" * 50)
    cases = {
        "written twice": [whole(first), whole(first)],
        "treats it as outside the pack": [delta_entry(second, first), whole(first)],
        "against itself": [PackEntry(first.id, 3, first.data, first.id, delta(first.data, first.data))],
    }
    for message, entries in cases.items():
        with open(tmp_path / "p.pack", "wb") as out, pytest.raises(ValueError, match=message):
            write_pack(out, entries, len(entries))


def test_object_id_matches_dulwich() -> None:
    blob = Blob.from_string(b"hello\n")
    assert object_id(3, b"hello\n") == blob.id


KILL_TARGET = """
import random, sys
from dulwich.repo import Repo
from ocsync_tui.vcs.pack import add_entries_to_store
from tests.vcs.test_pack import file_history, edited_versions
repo = Repo(sys.argv[1])
for round in range(1000):
    add_entries_to_store(repo.object_store, file_history(edited_versions(3, size=400_000, seed=round)))
    if round == 0:
        print("writing", flush=True)
"""


def test_kill_at_any_moment_leaves_a_store_git_accepts(tmp_path: Path) -> None:
    Repo.init(str(tmp_path), mkdir=False)
    rng = random.Random(7)
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", KILL_TARGET, str(tmp_path)], cwd=Path(__file__).parents[2], stdout=subprocess.PIPE
        )
        assert child.stdout.readline() == b"writing\n"  # the kill lands among the writes, not the imports
        time.sleep(rng.random() * 0.3)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        git_fsck_strict(tmp_path)
        for name in pack_listing(tmp_path):
            if name.endswith(".idx"):
                git(tmp_path, "verify-pack", str(tmp_path / ".git/objects/pack" / name))


@settings(max_examples=15, deadline=None)
@given(
    contents=st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=12),
    bases=st.lists(st.integers(-1, 11), min_size=12, max_size=12),
)
def test_any_mix_of_whole_objects_and_deltas_reads_back(tmp_path_factory, contents, bases) -> None:
    """Deltas against earlier, later, missing and repeated entries: git must read every object back."""
    repo_path = tmp_path_factory.mktemp("store")
    repo = Repo.init(str(repo_path), mkdir=False)
    blobs = [Blob.from_string(content) for content in contents]
    entries = []
    for blob, base_index in zip(blobs, bases):
        if 0 <= base_index < len(blobs) and blobs[base_index].id != blob.id:
            entries.append(delta_entry(blob, blobs[base_index]))
        else:
            entries.append(whole(blob))
    add_entries_to_store(repo.object_store, entries)

    batch = git(repo_path, "cat-file", "--batch", input=b"".join(blob.id + b"\n" for blob in blobs))
    expected = b"".join(b"%s blob %d\n%s\n" % (blob.id, len(blob.data), blob.data) for blob in blobs)
    assert batch == expected
    git_fsck_strict(repo_path)
    repo.close()


def test_incompressible_content_is_stored_not_deflated_and_git_reads_it(tmp_path: Path) -> None:
    random_blob = Blob.from_string(os.urandom(300_000))
    text_blob = Blob.from_string(b"the same line again\n" * 20_000)
    pack_path = tmp_path / "two.pack"
    with open(pack_path, "wb") as out:
        write_pack(out, [whole(random_blob), whole(text_blob)], 2)
    data = pack_path.read_bytes()
    header = bytes(pack_object_header(Blob.type_num, None, 300_000, SHA1))
    stream_start = 12 + len(header)  # after the pack header and the first object's header
    assert data[12:stream_start] == header
    assert data[stream_start : stream_start + 2] == b"\x78\x01", "the random blob is a stored (level 0) stream"
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    git(tmp_path / "repo", "index-pack", "--stdin", input=pack_path.read_bytes())
    assert git(tmp_path / "repo", "cat-file", "blob", random_blob.id.decode()) == random_blob.as_raw_string()
    assert git(tmp_path / "repo", "cat-file", "blob", text_blob.id.decode()) == text_blob.as_raw_string()
