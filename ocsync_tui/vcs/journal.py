"""The apply journal: what a bundle apply is about to do to the folder, written before it does it.

`.git/ocsync-journal` names the old head, the new head and the paths whose files change between them.
It exists from just before the first file is written until main points at the new head, so a kill at
any moment leaves either no journal (nothing on disk changed yet, or everything is done) or one that
the next command finishes before it looks at the folder. Without it, a peer's half-written change
would look like this device's own edits to the next scan.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ocsync_tui.errors import OcsyncError
from ocsync_tui.vcs.checkout import CheckoutResult, checkout_changes, flatten_tree
from ocsync_tui.vcs.committer import refresh_after_checkout
from ocsync_tui.vcs.disk_naming import DiskNaming, probe_disk_naming
from ocsync_tui.vcs.folder import FolderRepo
from ocsync_tui.vcs.pack import fsync_directory
from ocsync_tui.vcs.relocation import RelocationNamer

JOURNAL_NAME = "ocsync-journal"
_FORMAT = "ocsync-apply-journal-v1"


class JournalError(OcsyncError):
    pass


@dataclass(frozen=True)
class ApplyJournal:
    old_head: bytes | None
    new_head: bytes
    paths: tuple[bytes, ...]


def journal_path(folder: FolderRepo) -> Path:
    return Path(folder.git_dir) / JOURNAL_NAME


def _path_text(path: bytes) -> str:
    # surrogateescape keeps non-UTF-8 names exact through JSON.
    return path.decode("utf-8", "surrogateescape")


def write_journal(folder: FolderRepo, journal: ApplyJournal) -> None:
    """Durably record `journal`: temp file, fsync, rename, fsync of .git."""
    record = {
        "format": _FORMAT,
        "old_head": journal.old_head.decode("ascii") if journal.old_head else None,
        "new_head": journal.new_head.decode("ascii"),
        "paths": [_path_text(path) for path in journal.paths],
    }
    target = journal_path(folder)
    temp = target.with_name(JOURNAL_NAME + ".tmp")
    with open(temp, "w", encoding="ascii") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, target)
    fsync_directory(target.parent)


def read_journal(folder: FolderRepo) -> ApplyJournal | None:
    target = journal_path(folder)
    try:
        text = target.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
        if record["format"] != _FORMAT:
            raise ValueError(record["format"])
        old_head = record["old_head"].encode("ascii") if record["old_head"] else None
        return ApplyJournal(
            old_head=old_head,
            new_head=record["new_head"].encode("ascii"),
            paths=tuple(path.encode("utf-8", "surrogateescape") for path in record["paths"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise JournalError(f"{target} is damaged; it records an interrupted bundle apply") from None


def delete_journal(folder: FolderRepo) -> None:
    target = journal_path(folder)
    target.unlink(missing_ok=True)
    fsync_directory(target.parent)


def _shown(commit_id: bytes | None) -> str:
    return commit_id.decode("ascii") if commit_id else "nothing"


def _tree_of(folder: FolderRepo, commit_id: bytes | None) -> bytes | None:
    if commit_id is None:
        return None
    try:
        return folder.repo.object_store[commit_id].tree
    except KeyError:
        raise JournalError(
            f"{journal_path(folder)} names commit {_shown(commit_id)}, which the repository lacks"
        ) from None


def complete_journal(folder: FolderRepo, journal: ApplyJournal, naming: DiskNaming | None = None) -> CheckoutResult:
    """Steps 4-6 of an apply, after `journal` is on disk: update the files, refresh the stat cache,
    move main from the old head to the new one, delete the journal. Running it twice is harmless."""
    head = folder.head()
    if head not in (journal.old_head, journal.new_head):
        raise JournalError(
            f"main moved to {_shown(head)} while a bundle apply was interrupted; {journal_path(folder)} "
            f"expected {_shown(journal.old_head)} or {_shown(journal.new_head)}: check the folder, then delete it"
        )
    store = folder.repo.object_store
    new_tree = _tree_of(folder, journal.new_head)
    old_files = flatten_tree(store, _tree_of(folder, journal.old_head))
    new_files = flatten_tree(store, new_tree)
    result = checkout_changes(
        Path(folder.path),
        store,
        old_files,
        new_files,
        journal.paths,
        conflict_copy_names=RelocationNamer(store, journal.new_head, new_files),
        naming=naming or probe_disk_naming(Path(folder.git_dir)),
    )
    refresh_after_checkout(folder, new_tree, result.settled)
    if head != journal.new_head:
        folder.set_head(journal.new_head, expected_old=journal.old_head)
    delete_journal(folder)
    return result


def finish_interrupted_apply(folder: FolderRepo) -> bool:
    """Finish a bundle apply a crash interrupted, if there is one. Call under the folder lock, before
    anything scans or commits the folder. True if there was one to finish."""
    journal = read_journal(folder)
    if journal is None:
        return False
    complete_journal(folder, journal)
    return True
