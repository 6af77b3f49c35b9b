"""Negotiation on real repositories: what a puller says it has, and the thin bundle a giver makes of it."""

import subprocess
from pathlib import Path

from ocsync_tui.vcs.apply import apply_bundle
from ocsync_tui.vcs.negotiation import MAX_HAVES, bundle_for, haves
from ocsync_tui.vcs.writer import folder_writer
from tests.conftest import git_fsck_strict
from tests.vcs.devices import Device, make_device, verify_bundle


def first_parent_chain(device: Device) -> list[str]:
    """Head first, then its first parents down to the root, from the real git CLI."""
    result = subprocess.run(
        ["git", "-C", str(device.root), "rev-list", "--first-parent", "main"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def pull(puller: Device, giver: Device, scratch: Path, *, verify: bool = True):
    """One negotiated pull with the real functions: haves, bundle_for, git bundle verify, apply_bundle."""
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / f"{giver.name}-to-{puller.name}-{len(list(scratch.iterdir()))}.bundle"
    info = bundle_for(giver.folder, haves(puller.folder), out)
    if info is None:
        assert not out.exists()
        return None, None
    if verify:
        verify_bundle(puller.root, out)
    with folder_writer(puller.root) as folder:
        report = apply_bundle(folder, puller.identity, out, peer_name=giver.name)
    return info, report


def edit(device: Device, relpath: str, content: bytes) -> None:
    device.write(relpath, content)
    assert device.commit().committed


def test_haves_are_head_peer_heads_and_ancestors_at_doubling_distances(tmp_path):
    a = make_device(tmp_path, "a", {f"f{n:02}.txt": b"x%d" % n for n in range(20)})
    b = make_device(tmp_path, "b")
    pull(b, a, tmp_path / "bundles")
    for n in range(3):
        edit(b, f"b{n}.txt", b"from b")
    chain = first_parent_chain(b)
    assert len(chain) == 23
    expected_ancestors = [chain[1], chain[2], chain[4], chain[8], chain[16], chain[-1]]
    listed = haves(b.folder)
    assert listed == [chain[0], a.head().decode(), *expected_ancestors]
    assert len(set(listed)) == len(listed)


def test_the_walk_for_haves_stops_1024_commits_down(tmp_path):
    device = make_device(tmp_path, "long", {"seed.txt": b"seed"})
    stream = []
    for n in range(1, 1501):
        data = b"version %d\n" % n
        stream.append(b"commit refs/heads/main\ncommitter T <t@ocsync.invalid> %d +0000\ndata 4\nedit\n" % (1000 + n))
        if n == 1:
            stream.append(b"from refs/heads/main^0\n")
        stream.append(b"M 100644 inline f.txt\ndata %d\n%s\n" % (len(data), data))
    result = subprocess.run(["git", "-C", str(device.root), "fast-import", "--quiet"], input=b"".join(stream),
                            capture_output=True)
    assert result.returncode == 0, result.stderr
    chain = first_parent_chain(device)
    assert len(chain) == 1501
    assert haves(device.folder) == [chain[0], *(chain[2**k] for k in range(11))]


def test_haves_of_an_empty_folder_are_empty_and_of_one_commit_just_the_head(tmp_path):
    empty = make_device(tmp_path, "empty")
    assert haves(empty.folder) == []
    single = make_device(tmp_path, "single", {"one.txt": b"1"})
    assert haves(single.folder) == [single.head().decode()]


def test_haves_stay_within_the_message_limit_with_many_peers(tmp_path):
    a = make_device(tmp_path, "a", {f"f{n:02}.txt": b"x%d" % n for n in range(10)})
    chain = first_parent_chain(a)
    refs = a.folder.repo.refs
    for n in range(80):
        refs[f"refs/peers/peer{n:02}/main".encode()] = chain[n % len(chain)].encode()
    listed = haves(a.folder)
    assert len(listed) <= MAX_HAVES
    assert listed[0] == chain[0] and chain[-1] in listed


def test_diverged_replicas_converge_through_thin_bundles(tmp_path):
    a = make_device(tmp_path, "a", {f"doc{n}.txt": b"version one of %d" % n * 200 for n in range(12)})
    b = make_device(tmp_path, "b")
    full, _ = pull(b, a, tmp_path / "bundles")
    assert full.prerequisites == []
    assert b.head() == a.head()

    edit(a, "doc1.txt", b"a's edit")
    edit(a, "new-on-a.txt", b"a")
    edit(b, "doc2.txt", b"b's edit")

    info, report = pull(b, a, tmp_path / "bundles")  # B pulls from A, then A from B
    assert info.commit_count == 2 and info.prerequisites, "common history makes a thin bundle"
    assert info.size < full.size / 2
    assert report.kind == "merge"
    info, report = pull(a, b, tmp_path / "bundles")
    assert report.kind == "fast-forward"
    assert a.head() == b.head()
    assert a.files() == b.files()
    assert a.files()["doc1.txt"] == b"a's edit" and a.files()["doc2.txt"] == b"b's edit"
    for device in (a, b):
        git_fsck_strict(device.root)
    # Nothing left to say either way.
    assert pull(a, b, tmp_path / "bundles") == (None, None)
    assert pull(b, a, tmp_path / "bundles") == (None, None)


def test_conflicting_edits_converge_to_one_head(tmp_path):
    a = make_device(tmp_path, "a", {"shared.txt": b"base"})
    b = make_device(tmp_path, "b")
    pull(b, a, tmp_path / "bundles")
    edit(a, "shared.txt", b"from a")
    edit(b, "shared.txt", b"from b")
    pull(b, a, tmp_path / "bundles")
    pull(a, b, tmp_path / "bundles")
    assert a.head() == b.head()
    assert a.files() == b.files()
    assert sorted(a.files().values()) == [b"from a", b"from b"]


def test_a_puller_without_history_gets_a_full_bundle(tmp_path):
    a = make_device(tmp_path, "a", {"one.txt": b"1", "dir/two.txt": b"2"})
    b = make_device(tmp_path, "b")
    info, report = pull(b, a, tmp_path / "bundles")
    assert info.prerequisites == [] and info.commit_count == 2
    assert b.head() == a.head() and b.files() == a.files()


def test_unrelated_histories_get_a_full_bundle(tmp_path):
    a = make_device(tmp_path, "a", {"one.txt": b"1"})
    b = make_device(tmp_path, "b", {"other.txt": b"2"})
    info, report = pull(b, a, tmp_path / "bundles")
    assert info.prerequisites == []
    assert report.kind == "merge"


def test_no_bundle_when_the_puller_lists_the_givers_head(tmp_path):
    a = make_device(tmp_path, "a", {"one.txt": b"1", "two.txt": b"2"})
    b = make_device(tmp_path, "b")
    pull(b, a, tmp_path / "bundles")
    out = tmp_path / "none.bundle"
    assert bundle_for(a.folder, haves(b.folder), out) is None and not out.exists()
    edit(b, "three.txt", b"3")
    assert bundle_for(a.folder, haves(b.folder), out) is None and not out.exists()


def test_no_bundle_when_the_givers_head_is_behind_a_listed_commit(tmp_path):
    a = make_device(tmp_path, "a", {f"f{n}.txt": b"%d" % n for n in range(6)})
    b = make_device(tmp_path, "b")
    pull(b, a, tmp_path / "bundles")
    chain = first_parent_chain(a)
    a.folder.set_head(chain[3].encode(), chain[0].encode())  # A's main back to a commit it has a child of
    del b.folder.repo.refs[b"refs/peers/a/main"]
    assert chain[3] not in haves(b.folder) and chain[0] in haves(b.folder)
    out = tmp_path / "none.bundle"
    assert bundle_for(a.folder, haves(b.folder), out) is None and not out.exists()


def test_a_head_the_sample_misses_is_sent_again_and_applies_as_up_to_date(tmp_path):
    """The puller may have the giver's head between two sampled ancestors: one round of negotiation
    cannot see it, so the giver sends those commits again; applying them changes nothing."""
    a = make_device(tmp_path, "a", {"one.txt": b"1", "two.txt": b"2"})
    b = make_device(tmp_path, "b")
    pull(b, a, tmp_path / "bundles")
    del b.folder.repo.refs[b"refs/peers/a/main"]
    for n in range(5):
        edit(b, f"b{n}.txt", b"b")  # A's head is 5 commits down B's chain: not sampled
    assert a.head().decode() not in haves(b.folder)
    head_before = b.head()
    info, report = pull(b, a, tmp_path / "bundles")
    assert info.commit_count == 1
    assert report.kind == "up-to-date" and b.head() == head_before


def test_a_giver_without_commits_has_nothing_to_bundle(tmp_path):
    empty = make_device(tmp_path, "empty")
    out = tmp_path / "x.bundle"
    assert bundle_for(empty.folder, [], out) is None and not out.exists()


def test_unknown_and_non_commit_haves_are_ignored(tmp_path):
    a = make_device(tmp_path, "a", {"one.txt": b"1"})
    b = make_device(tmp_path, "b")
    pull(b, a, tmp_path / "bundles")
    edit(a, "two.txt", b"2")
    blob_id = a.folder.repo.object_store[a.folder.repo[a.head()].tree].items()[0].sha.decode()
    unknown = "0" * 40
    info = bundle_for(a.folder, [unknown, blob_id, *haves(b.folder)], tmp_path / "thin.bundle")
    assert info.commit_count == 1 and info.prerequisites == [b.head().decode()]
    verify_bundle(b.root, tmp_path / "thin.bundle")
