import itertools
import subprocess
from pathlib import Path

import pytest
from dulwich.objects import Blob, Tree
from dulwich.repo import Repo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocsync_tui.vcs.conflict_names import conflict_copy_names, conflict_copy_origin
from ocsync_tui.vcs.merge import (
    BOTH_CHANGED,
    FOLDER_OF_SAME_NAME,
    MERGE_IDENTITY,
    NAME_DIFFERS_ONLY_IN_CASE,
    MergeError,
    merge_heads,
)
from ocsync_tui.vcs.paths import UnsafePathError, collision_key
from tests.conftest import git_fsck_strict
from tests.vcs.history_builder import (
    DEVICE_A,
    DEVICE_B,
    DEVICE_C,
    EXECUTABLE,
    SYMLINK,
    History,
    write_unchecked_object,
)

T = 1_700_000_000  # 2023-11-14 22:13:20 UTC
STAMP = "20231114-221320"
SHORT_A, SHORT_B = "AEAQCAI", "AIBAEAQ"  # first seven characters of DEVICE_A and DEVICE_B


@pytest.fixture
def history() -> History:
    return History()


def _fork(
    history: History, base_files: dict, ours: dict, theirs: dict, *, ours_at=(DEVICE_A, T), theirs_at=(DEVICE_B, T + 1)
):
    """A base commit and two children changing it; returns (base, ours, theirs)."""
    base = history.commit(None, base_files, device=DEVICE_C, time=T - 100)
    left = history.commit(base, ours, device=ours_at[0], time=ours_at[1])
    right = history.commit(base, theirs, device=theirs_at[0], time=theirs_at[1])
    return base, left, right


# --- ancestry -------------------------------------------------------------------------------------


def test_the_same_head_is_up_to_date(history: History) -> None:
    head = history.commit(None, {"a": b"1"}, device=DEVICE_A, time=T)
    result = merge_heads(history.store, head, head)
    assert (result.kind, result.head, result.new_objects, result.conflicts) == ("up-to-date", head, [], [])


def test_an_ancestor_and_its_descendant_fast_forward_to_the_descendant(history: History) -> None:
    old = history.commit(None, {"a": b"1"}, device=DEVICE_A, time=T)
    middle = history.commit(old, {"b": b"2"}, device=DEVICE_B, time=T + 1)
    new = history.commit(middle, {"a": None}, device=DEVICE_A, time=T + 2)

    forward = merge_heads(history.store, old, new)
    assert (forward.kind, forward.head, forward.new_objects) == ("fast-forward", new, [])
    already = merge_heads(history.store, new, old)
    assert (already.kind, already.head, already.new_objects) == ("up-to-date", new, [])


# --- per-path rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ours, theirs, expected",
    [
        ({"a": b"ours"}, {"b": b"theirs"}, {"a": b"ours", "b": b"theirs", "c": b"c"}),
        ({"a": None}, {"b": b"theirs"}, {"b": b"theirs", "c": b"c"}),
        ({"new": b"n"}, {"c": None}, {"a": b"a", "b": b"b", "new": b"n"}),
        ({"a": b"same"}, {"a": b"same"}, {"a": b"same", "b": b"b", "c": b"c"}),
        ({"a": None}, {"a": None}, {"b": b"b", "c": b"c"}),
        ({"a": None}, {"a": b"kept"}, {"a": b"kept", "b": b"b", "c": b"c"}),
        ({"a": b"kept"}, {"a": None}, {"a": b"kept", "b": b"b", "c": b"c"}),
        ({"d/x": b"x"}, {"d/y": b"y"}, {"a": b"a", "b": b"b", "c": b"c", "d/x": b"x", "d/y": b"y"}),
    ],
    ids=[
        "one-side-each",
        "delete-and-add",
        "add-and-delete",
        "identical-change",
        "deleted-on-both",
        "deleted-vs-modified",
        "modified-vs-deleted",
        "new-folder-from-both",
    ],
)
def test_per_path_rules_without_conflict(history: History, ours: dict, theirs: dict, expected: dict) -> None:
    _, left, right = _fork(history, {"a": b"a", "b": b"b", "c": b"c"}, ours, theirs)
    result = history.merge(left, right)
    assert result.kind == "merge"
    assert result.conflicts == []
    assert history.files(result.head) == expected


def test_a_mode_change_on_one_side_is_kept(history: History) -> None:
    script = b"#!/bin/sh\n"
    _, left, right = _fork(history, {"run": script, "z": b"z"}, {"run": (EXECUTABLE, script)}, {"z": b"Z"})
    result = history.merge(left, right)
    assert history.entries(result.head)["run"] == (EXECUTABLE, b"#!/bin/sh\n")


def test_a_symlink_and_a_file_of_one_content_are_different_versions(history: History) -> None:
    _, left, right = _fork(history, {}, {"link": (SYMLINK, b"target")}, {"link": b"target"})
    result = history.merge(left, right)
    entries = history.entries(result.head)
    assert entries["link"] == (0o100644, b"target")  # theirs is newer
    assert entries[f"link.sync-conflict-{STAMP}-{SHORT_A}"] == (SYMLINK, b"target")


def test_the_merge_commit_is_deterministic_and_says_what_moved(history: History) -> None:
    _, left, right = _fork(
        history, {"a.txt": b"base"}, {"a.txt": b"ours"}, {"a.txt": b"theirs"}, theirs_at=(DEVICE_B, T + 60)
    )
    result = history.merge(left, right)
    commit = history.store[result.head]
    assert commit.parents == sorted([left, right])
    assert commit.author == commit.committer == MERGE_IDENTITY
    assert (commit.commit_time, commit.author_time) == (T + 60, T + 60)
    assert (commit.commit_timezone, commit.author_timezone) == (0, 0)
    copy = f"a.sync-conflict-{STAMP}-{SHORT_A}.txt"
    assert commit.message == f'merge\n\n"a.txt" -> "{copy}" (changed on both sides)\n'.encode()
    assert [obj.id for obj in result.new_objects][-1] == result.head


# --- conflicts: who wins, where the loser goes ------------------------------------------------------


@pytest.mark.parametrize(
    "path, copy",
    [
        ("notes.txt", f"notes.sync-conflict-{STAMP}-{SHORT_A}.txt"),
        ("Makefile", f"Makefile.sync-conflict-{STAMP}-{SHORT_A}"),
        (".bashrc", f".bashrc.sync-conflict-{STAMP}-{SHORT_A}"),
        ("archive.tar.gz", f"archive.tar.sync-conflict-{STAMP}-{SHORT_A}.gz"),
        ("docs/dir.v2/plan.md", f"docs/dir.v2/plan.sync-conflict-{STAMP}-{SHORT_A}.md"),
    ],
)
def test_the_older_version_moves_to_a_named_conflict_copy(history: History, path: str, copy: str) -> None:
    _, left, right = _fork(history, {path: b"base"}, {path: b"older"}, {path: b"newer"})
    result = history.merge(left, right)
    assert history.files(result.head) == {path: b"newer", copy: b"older"}
    [conflict] = result.conflicts
    assert (conflict.path, conflict.copy_path, conflict.winner, conflict.loser, conflict.reason) == (
        path,
        copy,
        right,
        left,
        BOTH_CHANGED,
    )


def test_a_taken_copy_name_gets_the_content_hash(history: History) -> None:
    copy = f"a.sync-conflict-{STAMP}-{SHORT_A}.txt"
    base_files = {"a.txt": b"base", copy: b"someone made this"}
    _, left, right = _fork(history, base_files, {"a.txt": b"older"}, {"a.txt": b"newer"})
    result = history.merge(left, right)
    content_hash = Blob.from_string(b"older").id[:7].decode()
    assert history.files(result.head) == {
        "a.txt": b"newer",
        copy: b"someone made this",
        f"a.sync-conflict-{STAMP}-{SHORT_A}-{content_hash}.txt": b"older",
    }


def test_an_equal_time_is_won_by_the_greater_device_id(history: History) -> None:
    _, left, right = _fork(
        history, {"f": b"base"}, {"f": b"from B"}, {"f": b"from A"}, ours_at=(DEVICE_B, T), theirs_at=(DEVICE_A, T)
    )
    result = history.merge(left, right)
    assert history.files(result.head) == {"f": b"from B", f"f.sync-conflict-{STAMP}-{SHORT_A}": b"from A"}


def test_the_winner_is_decided_by_the_commit_that_introduced_the_version_not_the_head(history: History) -> None:
    base = history.commit(None, {"f": b"base"}, device=DEVICE_C, time=T - 100)
    early_edit = history.commit(base, {"f": b"edited early on B"}, device=DEVICE_B, time=T + 10)
    later_other = history.commit(early_edit, {"other": b"x"}, device=DEVICE_B, time=T + 500)
    edit_on_a = history.commit(base, {"f": b"edited on A"}, device=DEVICE_A, time=T + 20)
    result = history.merge(later_other, edit_on_a)
    [conflict] = result.conflicts
    assert (conflict.winner, conflict.loser) == (edit_on_a, early_edit)
    assert history.files(result.head)["f"] == b"edited on A"


def test_a_version_that_came_through_a_merge_keeps_its_authors_time(history: History) -> None:
    base = history.commit(None, {"f": b"base", "g": b"g"}, device=DEVICE_C, time=T - 100)
    edit_b = history.commit(base, {"f": b"B's edit"}, device=DEVICE_B, time=T + 10)
    unrelated_c = history.commit(base, {"g": b"C's edit"}, device=DEVICE_C, time=T + 900)
    merged_bc = history.merge(edit_b, unrelated_c).head  # merge commit time T + 900
    edit_a = history.commit(base, {"f": b"A's edit"}, device=DEVICE_A, time=T + 20)
    result = history.merge(merged_bc, edit_a)
    [conflict] = result.conflicts
    assert (conflict.winner, conflict.loser) == (edit_a, edit_b)
    assert conflict.copy_path == f"f.sync-conflict-20231114-221330-{SHORT_B}"


def test_a_conflict_copy_made_by_a_merge_is_traced_to_its_author(history: History) -> None:
    """The copy's introducing commit is the loser's edit (time T), not the merge that moved it (T + 1),
    so an edit of the copy from a device whose clock says T - 50 loses to it."""
    _, left, right = _fork(history, {"f": b"base"}, {"f": b"older"}, {"f": b"newer"})
    first = history.merge(left, right).head
    copy = f"f.sync-conflict-{STAMP}-{SHORT_A}"
    edited_copy = history.commit(right, {copy: b"other copy"}, device=DEVICE_C, time=T - 50)
    result = history.merge(first, edited_copy)
    [conflict] = result.conflicts
    assert (conflict.path, conflict.winner, conflict.loser) == (copy, left, edited_copy)
    assert history.files(result.head)[copy] == b"older"
    assert history.files(result.head)[conflict.copy_path] == b"other copy"


def test_a_conflict_copy_edited_on_both_sides_keeps_the_newer_edit_and_makes_no_copy(history: History) -> None:
    copy = f"a.sync-conflict-{STAMP}-{SHORT_A}.txt"
    _, left, right = _fork(history, {copy: b"base"}, {copy: b"older"}, {copy: b"newer"})
    result = history.merge(left, right)
    assert history.files(result.head) == {copy: b"newer"}
    [conflict] = result.conflicts
    assert (conflict.path, conflict.copy_path, conflict.winner, conflict.loser) == (copy, None, right, left)
    assert b"kept the newer version" in history.store[result.head].message


def test_a_conflict_copy_added_on_two_replicas_keeps_both_versions(history: History) -> None:
    """One device can make two conflicting versions of a file within one second on two replicas: their
    copy names are equal. Neither replica had the copy before, so neither version replaced the other."""
    copy = f"n.sync-conflict-{STAMP}-{SHORT_A}.txt"
    root = history.commit(None, {"other": b"x"}, device=DEVICE_C, time=T - 100)
    alice = history.commit(root, {copy: b"from alice"}, device=DEVICE_A, time=T)
    bob = history.commit(root, {copy: b"from bob"}, device=DEVICE_B, time=T + 1)
    result = history.merge(alice, bob)
    assert merge_heads(history.store, bob, alice).head == result.head
    hashed = f"n.sync-conflict-{STAMP}-{SHORT_A}-{Blob.from_string(b'from alice').id[:7].decode()}.txt"
    assert history.files(result.head) == {"other": b"x", copy: b"from bob", hashed: b"from alice"}
    [conflict] = result.conflicts
    assert (conflict.path, conflict.copy_path, conflict.winner, conflict.loser) == (copy, hashed, bob, alice)


def test_a_copy_moved_aside_from_a_conflict_copy_is_traced_to_its_author(history: History) -> None:
    """Alice's version moves from the copy to its hashed name; a later version added there from C at
    T + 5 beats Alice's (T), not the merge that moved it (T + 10)."""
    copy = f"n.sync-conflict-{STAMP}-{SHORT_A}.txt"
    root = history.commit(None, {"other": b"x"}, device=DEVICE_C, time=T - 100)
    alice = history.commit(root, {copy: b"from alice"}, device=DEVICE_A, time=T)
    bob = history.commit(root, {copy: b"from bob"}, device=DEVICE_B, time=T + 10)
    merged = history.merge(alice, bob)
    [moved] = merged.conflicts
    from_c = history.commit(bob, {moved.copy_path: b"from C"}, device=DEVICE_C, time=T + 5)
    [conflict] = history.merge(merged.head, from_c).conflicts
    assert (conflict.path, conflict.winner, conflict.loser) == (moved.copy_path, from_c, alice)
    content_hash = Blob.from_string(b"from alice").id[:7].decode()
    assert conflict.copy_path == f"n.sync-conflict-{STAMP}-{SHORT_A}-{content_hash}-2.txt"


def test_a_copy_added_without_the_bases_version_is_kept_beside_an_edit_of_it(history: History) -> None:
    """The base holds B's copy only because it won an earlier add/add; A's version never replaced it."""
    copy = f"n.sync-conflict-{STAMP}-{SHORT_A}.txt"
    root = history.commit(None, {"other": b"x"}, device=DEVICE_C, time=T - 100)
    from_c = history.commit(root, {copy: b"C's"}, device=DEVICE_C, time=T)
    edited_by_b = history.commit(from_c, {copy: b"B's edit of C's"}, device=DEVICE_B, time=T + 10)
    from_a = history.commit(root, {copy: b"A's"}, device=DEVICE_A, time=T + 5)
    on_a = history.merge(from_a, from_c).head
    assert history.files(on_a)[copy] == b"A's"
    files = history.files(history.merge(on_a, edited_by_b).head)
    assert files[copy] == b"B's edit of C's"
    assert b"A's" in files.values()


def test_two_versions_from_one_device_in_one_second_are_ordered_by_history(history: History) -> None:
    """Both end up as the same conflict copy name on different replicas; the one the device wrote last
    stays there, even when its commit id sorts first, and the other moves to the hashed name."""
    root = history.commit(None, {"f": b"r"}, device=DEVICE_C, time=T - 100)
    first = history.commit(root, {"f": b"v1"}, device=DEVICE_A, time=T)
    second = next(
        commit
        for n in range(100)
        if (commit := history.commit(first, {"f": b"v2 %d" % n}, device=DEVICE_A, time=T)) < first
    )
    second_content = history.files(second)["f"]
    on_b = history.merge(history.commit(root, {"f": b"b"}, device=DEVICE_B, time=T + 5), first).head
    on_c = history.merge(history.commit(root, {"f": b"c"}, device=DEVICE_C, time=T + 6), second).head
    copy = f"f.sync-conflict-{STAMP}-{SHORT_A}"
    assert (history.files(on_b)[copy], history.files(on_c)[copy]) == (b"v1", second_content)

    result = history.merge(on_b, on_c)
    hashed = f"f.sync-conflict-{STAMP}-{SHORT_A}-{Blob.from_string(b'v1').id[:7].decode()}"
    assert (history.files(result.head)[copy], history.files(result.head)[hashed]) == (second_content, b"v1")
    assert [(c.path, c.copy_path, c.winner, c.loser) for c in result.conflicts if c.path == copy] == [
        (copy, hashed, second, first)
    ]


# --- names a disk cannot hold side by side ------------------------------------------------------------


def test_names_differing_in_case_keep_the_first_by_bytes(history: History) -> None:
    _, left, right = _fork(history, {}, {"Readme": b"ours"}, {"README": b"theirs"})
    result = history.merge(left, right)
    assert history.files(result.head) == {"README": b"theirs", f"Readme.sync-conflict-{STAMP}-{SHORT_A}": b"ours"}
    [conflict] = result.conflicts
    assert (conflict.path, conflict.winner, conflict.loser) == ("Readme", right, left)
    assert conflict.reason == NAME_DIFFERS_ONLY_IN_CASE


def test_a_conflict_copy_differing_only_in_case_is_renamed_from_its_original(history: History) -> None:
    lower, upper = f"a.sync-conflict-{STAMP}-{SHORT_A}.txt", f"A.sync-conflict-{STAMP}-{SHORT_A}.txt"
    _, left, right = _fork(history, {}, {lower: b"lower"}, {upper: b"upper"})
    files = history.files(history.merge(left, right).head)
    renamed = f"a.sync-conflict-{STAMP}-{SHORT_A}-{Blob.from_string(b'lower').id[:7].decode()}.txt"
    assert files == {upper: b"upper", renamed: b"lower"}


def test_names_differing_in_unicode_normalisation_collide(history: History) -> None:
    composed, decomposed = "caf\u00e9.txt", "cafe\u0301.txt"
    _, left, right = _fork(history, {}, {composed: b"nfc"}, {decomposed: b"nfd"})
    files = history.files(history.merge(left, right).head)
    assert files[decomposed] == b"nfd"  # "e" sorts before "\u00e9"
    assert files[f"caf\u00e9.sync-conflict-{STAMP}-{SHORT_A}.txt"] == b"nfc"
    assert len(files) == 2


def test_a_file_where_the_other_side_has_a_folder_becomes_a_copy(history: History) -> None:
    _, left, right = _fork(history, {}, {"x": b"file"}, {"x/y": b"inside"})
    result = history.merge(left, right)
    assert history.files(result.head) == {"x/y": b"inside", f"x.sync-conflict-{STAMP}-{SHORT_A}": b"file"}
    [conflict] = result.conflicts
    assert (conflict.path, conflict.winner, conflict.loser, conflict.reason) == ("x", None, left, FOLDER_OF_SAME_NAME)


def test_a_modified_file_survives_the_other_side_turning_it_into_a_folder(history: History) -> None:
    base = history.commit(None, {"x": b"base"}, device=DEVICE_C, time=T - 100)
    modified = history.commit(base, {"x": b"modified"}, device=DEVICE_B, time=T + 1)
    removed = history.commit(base, {"x": None}, device=DEVICE_A, time=T)
    folder = history.commit(removed, {"x/y": b"inside"}, device=DEVICE_A, time=T + 5)
    files = history.files(history.merge(folder, modified).head)
    assert files == {"x/y": b"inside", f"x.sync-conflict-20231114-221321-{SHORT_B}": b"modified"}


def test_a_file_whose_name_folds_to_a_folder_name_becomes_a_copy(history: History) -> None:
    _, left, right = _fork(history, {}, {"docs/a": b"a"}, {"DOCS": b"file"})
    files = history.files(history.merge(left, right).head)
    assert files == {"docs/a": b"a", "DOCS.sync-conflict-20231114-221321-" + SHORT_B: b"file"}


# --- criss-cross: several merge bases ---------------------------------------------------------------


def test_criss_cross_history_merges_against_the_virtual_base(history: History) -> None:
    """With either real base alone, f and g would both look changed on both sides and conflict."""
    base = history.commit(None, {"f": b"o", "g": b"o"}, device=DEVICE_C, time=T)
    a1 = history.commit(base, {"f": b"a1"}, device=DEVICE_A, time=T + 10)
    b1 = history.commit(base, {"g": b"b1"}, device=DEVICE_B, time=T + 11)
    a1_more = history.commit(a1, {"h": b"h"}, device=DEVICE_A, time=T + 12)
    a2 = history.merge(a1, b1).head
    b2 = history.merge(b1, a1_more).head
    a3 = history.commit(a2, {"f": b"a3"}, device=DEVICE_A, time=T + 20)
    b3 = history.commit(b2, {"g": b"b3"}, device=DEVICE_B, time=T + 21)
    result = history.merge(a3, b3)
    assert result.conflicts == []
    assert history.files(result.head) == {"f": b"a3", "g": b"b3", "h": b"h"}
    assert history.merge(b3, a3).head == result.head


def test_three_merge_bases_are_merged_into_one_virtual_base(history: History) -> None:
    """With any one base, or two merged, a file edited after all three would look changed on both sides."""
    root = history.commit(None, {"x1": b"r", "x2": b"r", "x3": b"r"}, device=DEVICE_C, time=T)
    x1 = history.commit(root, {"x1": b"1"}, device=DEVICE_A, time=T + 1)
    x2 = history.commit(root, {"x2": b"2"}, device=DEVICE_B, time=T + 2)
    x3 = history.commit(root, {"x3": b"3"}, device=DEVICE_C, time=T + 3)
    all_via_12 = history.merge(history.merge(x1, x2).head, x3).head
    all_via_13 = history.merge(history.merge(x1, x3).head, x2).head
    assert all_via_12 != all_via_13
    ours = history.commit(all_via_12, {"x1": b"a", "x2": b"a"}, device=DEVICE_A, time=T + 10)
    theirs = history.commit(all_via_13, {"x3": b"b"}, device=DEVICE_B, time=T + 11)
    result = history.merge(ours, theirs)
    assert result.conflicts == []
    assert history.files(result.head) == {"x1": b"a", "x2": b"a", "x3": b"b"}


def test_criss_crosses_nested_hundreds_deep_merge_without_exhausting_the_stack(history: History) -> None:
    """Each level's two commits have the previous level's two as merge bases: a crafted history."""
    root = history.commit(None, {"f": b"r"}, device=DEVICE_C, time=T)
    left = history.commit(root, {"f": b"left 0"}, device=DEVICE_A, time=T + 1)
    right = history.commit(root, {"f": b"right 0"}, device=DEVICE_B, time=T + 1)
    for level in range(1, 400):
        left, right = (
            history.commit([left, right], {"f": b"left %d" % level}, device=DEVICE_A, time=T + 1 + level),
            history.commit([right, left], {"f": b"right %d" % level}, device=DEVICE_B, time=T + 1 + level),
        )
    result = history.merge(left, right)
    assert merge_heads(history.store, right, left).head == result.head
    assert sorted(history.files(result.head).values()) == [b"left 399", b"right 399"]


def test_folders_nested_over_a_thousand_deep_merge_without_exhausting_the_stack(history: History) -> None:
    deep_file = "d/" * 1200 + "f"
    blob = Blob.from_string(b"deep")
    history.store.add_object(blob)
    tree = Tree()
    tree.add(b"f", 0o100644, blob.id)
    for _ in range(1200):  # built here without recursion, as a peer could send it
        history.store.add_object(tree)
        parent = Tree()
        parent.add(b"d", 0o040000, tree.id)
        tree = parent
    history.store.add_object(tree)
    ours = history.commit(None, {"x": b"x"}, device=DEVICE_A, time=T)
    theirs = _rewritten(history, history.commit(None, {}, device=DEVICE_B, time=T + 1), tree=tree.id)
    result = history.merge(ours, theirs)
    assert history.files(result.head) == {"x": b"x", deep_file: b"deep"}


def test_unrelated_histories_merge_against_an_empty_base(history: History) -> None:
    mine = history.commit(None, {"same": b"s", "f": b"mine"}, device=DEVICE_A, time=T)
    yours = history.commit(None, {"same": b"s", "f": b"yours"}, device=DEVICE_B, time=T + 1)
    files = history.files(history.merge(mine, yours).head)
    assert files == {"same": b"s", "f": b"yours", f"f.sync-conflict-{STAMP}-{SHORT_A}": b"mine"}


# --- hostile or incomplete input --------------------------------------------------------------------


def _rewritten(history: History, commit_id: bytes, **fields) -> bytes:
    """The commit with some fields replaced, as a hostile or broken peer could send it."""
    commit = history.store[commit_id]
    for name, value in fields.items():
        setattr(commit, name, value)
    history.store.add_object(commit)
    return commit.id


def test_a_head_with_an_unsafe_tree_is_refused(history: History) -> None:
    mine = history.commit(None, {"a": b"1"}, device=DEVICE_A, time=T)
    blob = Blob.from_string(b"[core]\n\tfsmonitor = evil\n")
    git_dir = Tree()
    git_dir.add(b"config", 0o100644, blob.id)
    root = Tree()
    root.add(b".GIT", 0o040000, git_dir.id)
    for obj in (blob, git_dir, root):
        history.store.add_object(obj)
    hostile = _rewritten(history, history.commit(None, {}, device=DEVICE_B, time=T), tree=root.id)
    with pytest.raises(UnsafePathError, match=r"'\.GIT'"):
        merge_heads(history.store, mine, hostile)
    with pytest.raises(UnsafePathError, match=r"'\.GIT'"):
        merge_heads(history.store, hostile, mine)


def test_a_missing_parent_is_a_clear_error(history: History) -> None:
    mine = history.commit(None, {"a": b"1"}, device=DEVICE_A, time=T)
    orphan = _rewritten(history, history.commit(None, {"a": b"2"}, device=DEVICE_B, time=T + 1), parents=[b"9" * 40])
    with pytest.raises(MergeError, match="object 9{40} is missing"):
        merge_heads(history.store, mine, orphan)


@pytest.mark.parametrize(
    "raw",
    [b"garbage", b"tree " + b"4b825dc642cb6eb9a060e54bf8d69288fbee4904" + b"\n\nno committer\n"],
    ids=["unparseable", "no-committer"],
)
def test_a_damaged_commit_is_a_clear_error(tmp_path: Path, raw: bytes) -> None:
    repo = Repo.init(str(tmp_path), mkdir=False)
    history = History(repo.object_store)
    mine = history.commit(None, {"a": b"1"}, device=DEVICE_A, time=T)
    damaged = write_unchecked_object(tmp_path, b"commit", raw)
    with pytest.raises(MergeError, match=f"object {damaged.decode()} is damaged"):
        merge_heads(Repo(str(tmp_path)).object_store, mine, damaged)


# --- real git accepts what we write -----------------------------------------------------------------


def test_merged_objects_pass_git_fsck_strict_and_our_merge_bases_are_gits(tmp_path: Path) -> None:
    from ocsync_tui.vcs.merge import _merge_bases, _Objects  # private: cross-checked against real git

    repo = Repo.init(str(tmp_path), mkdir=False)
    history = History(repo.object_store)
    base = history.commit(None, {"f.txt": b"o", "g": b"o", "d/x": b"x", ".bashrc": b"b"}, device=DEVICE_C, time=T)
    a1 = history.commit(base, {"f.txt": b"a1", "Case": b"A"}, device=DEVICE_A, time=T + 10)
    b1 = history.commit(base, {"g": b"b1", "d/x": None, "d": b"file now", "CASE": b"B"}, device=DEVICE_B, time=T + 11)
    a1_more = history.commit(a1, {"d/x": b"x2", ".bashrc": b"a"}, device=DEVICE_A, time=T + 12)
    a2 = history.merge(a1, b1).head
    b2 = history.merge(b1, a1_more).head
    a3 = history.commit(a2, {"f.txt": b"a3", ".bashrc": b"a3"}, device=DEVICE_A, time=T + 20)
    b3 = history.commit(b2, {".bashrc": b"b3"}, device=DEVICE_B, time=T + 21)
    result = history.merge(a3, b3)
    assert {conflict.reason for conflict in result.conflicts} >= {BOTH_CHANGED}
    repo.refs[b"refs/heads/main"] = result.head
    repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/main")

    git_fsck_strict(tmp_path)
    for ours, theirs in [(a3, b3), (a2, b2), (a1, b1), (a1_more, a3), (b3, base)]:
        git_bases = subprocess.run(
            ["git", "-C", str(tmp_path), "merge-base", "--all", ours.decode(), theirs.decode()],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        assert _merge_bases(_Objects(repo.object_store), ours, theirs) == sorted(b.encode() for b in git_bases)
    assert sorted(_merge_bases(_Objects(repo.object_store), a3, b3)) == sorted([a1, b1])  # criss-cross


# --- conflict names ----------------------------------------------------------------------------------


def test_copy_names_add_the_content_hash_then_a_number() -> None:
    names = conflict_copy_names("dir/a.txt", T, DEVICE_A, b"0123456789abcdef")
    assert [next(names) for _ in range(4)] == [
        f"dir/a.sync-conflict-{STAMP}-{SHORT_A}.txt",
        f"dir/a.sync-conflict-{STAMP}-{SHORT_A}-0123456.txt",
        f"dir/a.sync-conflict-{STAMP}-{SHORT_A}-0123456-2.txt",
        f"dir/a.sync-conflict-{STAMP}-{SHORT_A}-0123456-3.txt",
    ]


@pytest.mark.parametrize("path", ["a.txt", "Makefile", ".bashrc", "archive.tar.gz", "dir.d/x.y.z", "file.", "..."])
def test_every_candidate_copy_name_leads_back_to_its_origin(path: str) -> None:
    names = conflict_copy_names(path, T, DEVICE_A, b"0123456789abcdef")
    for _ in range(4):
        assert conflict_copy_origin(next(names)) == path
    assert conflict_copy_origin(path) is None


def test_a_copy_name_fits_a_file_name_and_holds_no_separator() -> None:
    long_name = "é" * 200 + ".txt"
    name = next(conflict_copy_names("dir/" + long_name, T, "we/ird@device", b"abcdef0123456"))
    assert name.startswith("dir/")
    assert len(name.removeprefix("dir/").encode()) <= 255
    assert name.endswith(f".sync-conflict-{STAMP}-weirdde.txt")


def test_copy_names_survive_times_no_calendar_holds() -> None:
    assert "19700101-000000" in next(conflict_copy_names("a", -5, DEVICE_A, b"abcdef0"))
    assert "99991231-235959" in next(conflict_copy_names("a", 2**62, DEVICE_A, b"abcdef0"))


# --- properties: symmetry and convergence over random histories -------------------------------------

# Users may write files named like conflict copies (a replica of theirs did), also a copy a merge makes.
PATHS = [
    "a.txt",
    "A.txt",
    "b",
    "d",
    "d/e",
    "d/f",
    "n.sync-conflict-20240101-000000-ABCDEFG.txt",
    f"a.sync-conflict-{STAMP}-{SHORT_A}.txt",
]


def _assert_every_name_fits_one_disk(files: dict[str, bytes]) -> None:
    """No two files a case-folding or normalising disk would store as one; no file where a folder is."""
    keys = [collision_key(path) for path in files]
    assert len(set(keys)) == len(keys), sorted(files)
    folders = {collision_key(path[:i]) for path in files for i, char in enumerate(path) if char == "/"}
    assert not folders & set(keys), sorted(files)


def _user_could(delete: bool, path: str, files: dict[str, bytes]) -> bool:
    """Delete an existing file, or write one where no folder of its name is (nor a file of a folder's)."""
    if delete:
        return path in files
    return not any(other.startswith(path + "/") or path.startswith(other + "/") for other in files)


class _Replicas:
    """Three replicas editing and merging at the pure-merge level, tracking which versions must survive."""

    def __init__(self, shared_root: bool) -> None:
        self.history = History()
        self.clock = T
        self.edits = 0
        root = self.history.commit(None, {"b": b"root"}, device=DEVICE_C, time=T) if shared_root else None
        self.heads: list[bytes | None] = [root, root, root]
        self.devices = [DEVICE_A, DEVICE_B, DEVICE_C]
        self.must_survive: dict[bytes, str] = {b"root": "b"} if shared_root else {}
        # Every path some commit in each replica's history had: an edit of a conflict copy that was
        # there may be superseded by a newer edit of it elsewhere, by design.
        self.seen: list[set[str]] = [{"b"} if shared_root else set() for _ in range(3)]

    def edit(self, replica: int, path: str, delete: bool, same_second: bool) -> None:
        head = self.heads[replica]
        files = self.history.files(head) if head else {}
        if not _user_could(delete, path, files):
            return
        self.edits += 1
        self.clock += 0 if same_second else 1
        content = None if delete else f"edit {self.edits} of {path}".encode()
        if path in files:
            self.must_survive.pop(files[path], None)  # seen and replaced by this edit
        if content is not None and not (conflict_copy_origin(path) and path in self.seen[replica]):
            self.must_survive[content] = path
        self.heads[replica] = self.history.commit(
            head, {path: content}, device=self.devices[replica], time=self.clock
        )
        self.seen[replica].add(path)

    def pull(self, puller: int, giver: int) -> None:
        mine, theirs = self.heads[puller], self.heads[giver]
        if theirs is None:
            return
        self.seen[puller] |= self.seen[giver]
        if mine is None:
            self.heads[puller] = theirs
            return
        mirrored = merge_heads(self.history.store, theirs, mine)
        result = self.history.merge(mine, theirs)
        assert mirrored.head == result.head
        assert [obj.id for obj in mirrored.new_objects] == [obj.id for obj in result.new_objects]
        assert mirrored.conflicts == result.conflicts
        if result.kind == "merge":
            _assert_every_name_fits_one_disk(self.history.files(result.head))
        self.heads[puller] = result.head
        self.seen[puller] |= self.history.files(result.head).keys()

    def converge(self) -> None:
        for _ in range(3):
            if len(set(self.heads)) == 1:
                return
            for puller in range(3):
                for giver in range(3):
                    if puller != giver:
                        self.pull(puller, giver)
        assert len(set(self.heads)) == 1


_edit = st.tuples(st.just("edit"), st.integers(0, 2), st.sampled_from(PATHS), st.booleans(), st.booleans())
_pull = st.tuples(st.just("pull"), st.integers(0, 2), st.integers(0, 2))
_operation = st.one_of(_edit, _edit, _pull)  # edits twice as often: more concurrent changes to merge


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shared_root=st.booleans(), operations=st.lists(_operation, max_size=40))
def test_replicas_converge_keeping_every_version_nobody_replaced(shared_root: bool, operations: list) -> None:
    replicas = _Replicas(shared_root)
    for operation in operations:
        if operation[0] == "edit":
            replicas.edit(*operation[1:])
        elif operation[1] != operation[2]:
            replicas.pull(*operation[1:])
    replicas.converge()

    final = replicas.heads[0]
    files = replicas.history.files(final) if final else {}
    for content, path in replicas.must_survive.items():
        places = [p for p, c in files.items() if c == content]
        origin = conflict_copy_origin(path) or path
        assert any(p == path or conflict_copy_origin(p) == origin for p in places), (content, path, files)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(PATHS), st.booleans()), max_size=12))
def test_three_branches_merged_in_any_order_give_one_tree(edits: list) -> None:
    history = History()
    root = history.commit(None, {"b": b"root", "d/e": b"e"}, device=DEVICE_C, time=T)
    heads, devices = [root, root, root], [DEVICE_A, DEVICE_B, DEVICE_C]
    for number, (branch, path, delete) in enumerate(edits):
        if not _user_could(delete, path, history.files(heads[branch])):
            continue
        content = None if delete else b"edit %d" % number
        heads[branch] = history.commit(heads[branch], {path: content}, device=devices[branch], time=T + 1 + number)
    trees = {
        history.store[history.merge(history.merge(first, second).head, third).head].tree
        for first, second, third in itertools.permutations(heads)
    }
    assert len(trees) == 1


# --- finding one entry in a serialized tree (the history walk's fast path) ----------------------------

_entry_names = st.one_of(
    st.sampled_from([b"a.txt", b"x100644 a.txt", b"100644 a.txt", b"b", b"a.txt ", b" a.txt"]),
    st.binary(min_size=1, max_size=12).filter(lambda name: b"\0" not in name and b"/" not in name),
)
_entries = st.tuples(st.sampled_from([0o100644, 0o100755, 0o120000, 0o040000]), st.binary(min_size=20, max_size=20))


@settings(max_examples=100, deadline=None)
@given(tree_entries=st.dictionaries(_entry_names, _entries, max_size=8), probe=_entry_names, probe_entry=_entries)
def test_an_entry_is_found_by_its_bytes_exactly_when_the_parsed_tree_has_it(tree_entries, probe, probe_entry) -> None:
    from ocsync_tui.vcs.merge import _has_serialized_entry  # private: the walk's fast path, tested on its own

    tree = Tree()
    for name, (mode, sha) in tree_entries.items():
        tree.add(name, mode, sha.hex().encode())
    raw = tree.as_raw_string()
    for name, (mode, sha) in [*tree_entries.items(), (probe, probe_entry)]:
        entry = (mode, sha.hex().encode())
        assert _has_serialized_entry(raw, name, entry) == (name in tree and tree[name] == entry)
