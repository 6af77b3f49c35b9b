"""The apply journal: written durably, read back exactly, and finished from any state a crash leaves."""

import os

import pytest

from ocsync_tui.vcs.bundle import quarantined_import
from ocsync_tui.vcs.checkout import temp_name
from ocsync_tui.vcs.committer import commit_pending
from ocsync_tui.vcs.journal import (
    ApplyJournal,
    JournalError,
    finish_interrupted_apply,
    journal_path,
    read_journal,
    write_journal,
)
from tests.conftest import git_fsck_strict
from tests.vcs.devices import make_device

CHANGED = [f"f{n}.txt" for n in range(6)]


@pytest.fixture
def interrupted(tmp_path):
    """bob holds alice's next commit in his store, main still at the old head: as a kill mid-apply
    leaves it once the journal is written. Returns (alice, bob, journal)."""
    alice = make_device(tmp_path, "alice", {path: b"old " + path.encode() for path in CHANGED + ["same.txt"]})
    bob = make_device(tmp_path, "bob")
    bob.pull_from(alice, tmp_path / "bundles")
    for path in CHANGED[:4]:
        alice.write(path, b"new " + path.encode())
    alice.delete(CHANGED[4])
    alice.write("sub/added.txt", b"added")
    alice.commit()
    bundle = alice.bundle_for(bob, tmp_path / "next.bundle")
    old = bob.head()
    with quarantined_import(bob.folder, bundle) as imported:
        new = imported.head
    journal = ApplyJournal(old, new, tuple(sorted([p.encode() for p in CHANGED[:5]] + [b"sub/added.txt"])))
    write_journal(bob.folder, journal)
    return alice, bob, journal


def test_round_trip_keeps_every_byte_of_a_path(tmp_path):
    bob = make_device(tmp_path, "bob", {"a": b"1"})
    journal = ApplyJournal(None, bob.head(), (b"plain", "caf\u00e9/\u00fc".encode(), b"not-utf8-\xff\xfe"))
    write_journal(bob.folder, journal)
    assert read_journal(bob.folder) == journal
    assert not journal_path(bob.folder).with_name("ocsync-journal.tmp").exists()


def test_no_journal_means_nothing_to_finish(tmp_path):
    bob = make_device(tmp_path, "bob", {"a": b"1"})
    assert read_journal(bob.folder) is None
    assert finish_interrupted_apply(bob.folder) is False


@pytest.mark.parametrize("text", ["", "{", '{"format": "something else"}', '{"format": "ocsync-apply-journal-v1"}'])
def test_a_damaged_journal_is_a_clear_error(tmp_path, text):
    bob = make_device(tmp_path, "bob", {"a": b"1"})
    journal_path(bob.folder).write_text(text)
    with pytest.raises(JournalError, match="damaged"):
        read_journal(bob.folder)


def test_finishes_an_apply_killed_halfway_through_the_files(interrupted):
    alice, bob, journal = interrupted
    # Half done: one file written, one temp file left behind, the rest untouched.
    bob.write(CHANGED[0], b"new " + CHANGED[0].encode())
    (bob.root / os.fsdecode(temp_name(CHANGED[1].encode()))).write_bytes(b"new f1 but cut sh")
    assert finish_interrupted_apply(bob.folder) is True
    assert bob.head() == journal.new_head
    assert bob.files() == alice.files() == bob.head_files()
    assert read_journal(bob.folder) is None
    assert not commit_pending(bob.folder, bob.identity).committed, "the peer's change looked like a local edit"
    git_fsck_strict(bob.root)


def test_finishes_an_apply_killed_after_main_moved(interrupted):
    alice, bob, journal = interrupted
    assert finish_interrupted_apply(bob.folder) is True
    write_journal(bob.folder, journal)  # as if killed between moving main and deleting the journal
    assert finish_interrupted_apply(bob.folder) is True
    assert bob.head() == journal.new_head and bob.files() == alice.files()
    assert not commit_pending(bob.folder, bob.identity).committed
    git_fsck_strict(bob.root)


def test_an_edit_made_while_stopped_is_kept_and_the_new_version_goes_beside_it(interrupted):
    alice, bob, journal = interrupted
    bob.write(CHANGED[2], b"bob edited this while ocsync was down")
    assert finish_interrupted_apply(bob.folder) is True
    assert (bob.root / CHANGED[2]).read_bytes() == b"bob edited this while ocsync was down"
    assert bob.head() == journal.new_head
    [copy] = [name for name in bob.files() if name.startswith("f2.sync-conflict-")]
    assert (bob.root / copy).read_bytes() == b"new " + CHANGED[2].encode()
    committed = commit_pending(bob.folder, bob.identity).committed
    assert sorted(record.path for record in committed) == sorted([copy, CHANGED[2]])
    git_fsck_strict(bob.root)


def test_refuses_when_main_moved_elsewhere_and_writes_nothing(interrupted):
    alice, bob, journal = interrupted
    elsewhere = bob.folder.repo[journal.old_head].parents[0]
    bob.folder.set_head(elsewhere, expected_old=journal.old_head)
    before = bob.files()
    with pytest.raises(JournalError, match="main moved"):
        finish_interrupted_apply(bob.folder)
    assert bob.files() == before and bob.head() == elsewhere


def test_refuses_a_journal_naming_a_missing_commit(tmp_path):
    bob = make_device(tmp_path, "bob", {"a": b"1"})
    write_journal(bob.folder, ApplyJournal(bob.head(), b"1" * 40, (b"a",)))
    with pytest.raises(JournalError, match="lacks"):
        finish_interrupted_apply(bob.folder)
