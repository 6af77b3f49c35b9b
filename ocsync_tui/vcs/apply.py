"""Applying a peer's bundle to a folder: import, record the peer's head, merge, update the files.

Order (DESIGN.md, "Folders as git repositories" and "Merge"): the bundle's objects are imported and
every new commit's tree validated before anything becomes visible; local changes at the paths the merge
touches are committed before the merge (commit before you merge); the files then change under the
journal, so a crash at any moment is finished by the next command instead of being mistaken for local
edits.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dulwich.object_store import BaseObjectStore, MemoryObjectStore, OverlayObjectStore
from dulwich.refs import check_ref_format

from ocsync_tui.errors import OcsyncError
from ocsync_tui.identity import DeviceIdentity
from ocsync_tui.vcs.bundle import quarantined_import
from ocsync_tui.vcs.checkout import flatten_tree
from ocsync_tui.vcs.committer import commit_pending
from ocsync_tui.vcs.disk_naming import DiskNaming, probe_disk_naming
from ocsync_tui.vcs.folder import FolderRepo
from ocsync_tui.vcs.incoming_trees import validate_root_trees
from ocsync_tui.vcs.journal import ApplyJournal, complete_journal, write_journal
from ocsync_tui.vcs.merge import Conflict, MergeResult, merge_heads
from ocsync_tui.vcs.pack import PackEntry, add_entries_to_store

_PEER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# Each round commits what is on disk at the paths the merge touches, then merges again on top of that.
# A folder written to without pause must still get its peer's changes after a few rounds: the checkout
# never overwrites what the user wrote since, so stopping early loses nothing.
_MAX_COMMIT_ROUNDS = 5


class ApplyError(OcsyncError):
    pass


@dataclass(frozen=True)
class ApplyReport:
    old_head: bytes | None
    new_head: bytes | None
    kind: Literal["up-to-date", "fast-forward", "merge"]
    conflicts: tuple[Conflict, ...]
    updated_paths: tuple[bytes, ...]

    def summary(self) -> str:
        def short(commit_id: bytes | None) -> str:
            return commit_id.decode("ascii")[:10] if commit_id else "(empty)"

        if self.kind == "up-to-date":
            return f"already up to date at {short(self.new_head)}"
        text = (
            f"{self.kind} {short(self.old_head)} -> {short(self.new_head)}: "
            f"{len(self.updated_paths)} file(s) updated"
        )
        lines = [text]
        for conflict in self.conflicts:
            kept_as = f"other version kept as {conflict.copy_path}" if conflict.copy_path else "newer version kept"
            lines.append(f"conflict: {conflict.path} ({conflict.reason}; {kept_as})")
        return "\n".join(lines)


def peer_ref(peer_name: str) -> bytes:
    """`refs/peers/NAME/main`, refusing a NAME that is not one plain ref component."""
    ref = f"refs/peers/{peer_name}/main".encode("utf-8", "surrogateescape")
    if not _PEER_NAME.fullmatch(peer_name) or peer_name.endswith(".lock") or not check_ref_format(ref):
        raise ApplyError(
            f"peer name {peer_name!r} is not usable in a ref: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return ref


def _changed_paths(store: BaseObjectStore, old_tree: bytes | None, new_tree: bytes | None) -> list[bytes]:
    old_files, new_files = flatten_tree(store, old_tree), flatten_tree(store, new_tree)
    return sorted(path for path in old_files.keys() | new_files.keys() if old_files.get(path) != new_files.get(path))


def _record_peer_head(folder: FolderRepo, ref: bytes, head: bytes) -> None:
    # Only ocsync writes refs/peers/…, and only under the folder lock: a lock file found there is what a
    # writer killed mid-update left behind, and would refuse every later apply.
    (folder.git_dir / (os.fsdecode(ref) + ".lock")).unlink(missing_ok=True)
    folder.repo.refs[ref] = head


def _tree(store: BaseObjectStore, commit_id: bytes | None) -> bytes | None:
    return store[commit_id].tree if commit_id else None


def _merged_view(store: BaseObjectStore, merge: MergeResult) -> BaseObjectStore:
    """The store as it will be once the merge's new trees and commit are written."""
    if not merge.new_objects:
        return store
    made = MemoryObjectStore()
    for obj in merge.new_objects:
        made.add_object(obj)
    return OverlayObjectStore([made, store])


def _merge(folder: FolderRepo, ours: bytes | None, theirs: bytes) -> MergeResult:
    if ours is None:
        return MergeResult(kind="fast-forward", head=theirs, new_objects=[], conflicts=[])
    return merge_heads(folder.repo.object_store, ours, theirs)


def _store_merge_objects(folder: FolderRepo, merge: MergeResult) -> None:
    if merge.new_objects:
        add_entries_to_store(
            folder.repo.object_store,
            [PackEntry(obj.id, obj.type_num, obj.as_raw_string()) for obj in merge.new_objects],
        )


def apply_bundle(
    folder: FolderRepo,
    identity: DeviceIdentity,
    bundle_path: Path,
    *,
    peer_name: str = "manual",
    disk_naming: DiskNaming | None = None,
    consume: bool = False,
) -> ApplyReport:
    """Import `bundle_path` into `folder` and merge its head into main. Call under the folder lock.

    `disk_naming` overrides the probe of which names this disk treats as one (tests force folding);
    `consume` lets the import use the bundle file up (see quarantined_import)."""
    ref = peer_ref(peer_name)
    with quarantined_import(folder, bundle_path, consume=consume) as imported:
        validate_root_trees(imported.object_store, imported.new_trees)
        theirs = imported.head
    _record_peer_head(folder, ref, theirs)
    store = folder.repo.object_store

    for round_number in range(1, _MAX_COMMIT_ROUNDS + 1):
        ours = folder.head()
        merge = _merge(folder, ours, theirs)
        merged = _merged_view(store, merge)
        touched = _changed_paths(merged, _tree(merged, ours), _tree(merged, merge.head))
        # Commit before you merge: what is on disk at those paths becomes history first. If that made
        # commits, the merge is redone on top of them; the last round does not commit, so `merge`
        # always starts from the current head.
        if round_number == _MAX_COMMIT_ROUNDS or not touched:
            break
        if not commit_pending(folder, identity, paths=touched).committed:
            break
    if merge.kind == "up-to-date" or merge.head == ours:
        return ApplyReport(ours, ours, "up-to-date", (), ())

    _store_merge_objects(folder, merge)
    journal = ApplyJournal(old_head=ours, new_head=merge.head, paths=tuple(touched))
    write_journal(folder, journal)
    checkout = complete_journal(folder, journal, disk_naming or probe_disk_naming(Path(folder.git_dir)))

    # A file the user changed during the checkout was kept; a path this disk cannot hold went to a
    # conflict copy. Both are this device's changes now: commit them so every peer converges.
    relocations = [path for pair in checkout.relocated.items() for path in pair]
    if checkout.kept_local or relocations:
        commit_pending(folder, identity, paths=sorted(set(checkout.kept_local) | set(relocations)))
    return ApplyReport(
        old_head=ours,
        new_head=folder.head(),
        kind=merge.kind,
        conflicts=tuple(merge.conflicts),
        updated_paths=tuple(sorted(set(checkout.written) | set(checkout.deleted))),
    )
