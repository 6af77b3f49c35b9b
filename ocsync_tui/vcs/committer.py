"""The committer: every added, modified or deleted file becomes its own commit on main.

A run walks the folder against the stat cache, reads each candidate safely, and builds its commits in
memory (TreeBuilder), landing them as one pack (several for very large bursts) before main moves, so a
kill at any moment leaves a repository git accepts and main on a commit whose objects are all there.
Adds and modifications come first and deletions last, so a rename commits the add before the delete and
the content never leaves the tip; a deletion whose content was added elsewhere in the same run is a
rename and is never held. Other deletions are refused while the folder marker is missing, and held when
they would remove more than half of the files (and more than 10) until confirmed.
"""

import functools
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ocsync_tui.errors import OcsyncError
from ocsync_tui.identity import DeviceIdentity
from ocsync_tui.vcs.checkout import flatten_tree
from ocsync_tui.vcs.commit_builder import BLOB_TYPE, PathConflict, TreeBuilder, commit_raw, hash_object
from ocsync_tui.vcs.ignore import IgnoreRules
from ocsync_tui.vcs.pack import add_entries_to_store
from ocsync_tui.vcs.paths import FOLDER_MARKER
from ocsync_tui.vcs.scan import Candidate, HashedFile, ReadFile, hash_candidate, read_candidate, shown, walk_folder
from ocsync_tui.vcs.statcache import (
    StatCache,
    load_stat_cache,
    mode_of,
    mtime_ns_of,
    save_stat_cache,
    smudged,
    unknown_stat,
)

if TYPE_CHECKING:
    from ocsync_tui.vcs.folder import FolderRepo

# Land a pack once this much object content is waiting, so a burst of big files stays within memory.
PACK_BYTES_LIMIT = 96 << 20
# Up to this many files a run asks the store whether new content is already in history (a restore
# brings old content back); a burst skips the per-object lookups, at worst storing such content twice.
_STORE_LOOKUPS_UP_TO = 100
_PROGRESS_EVERY = 64


class MarkerMissingError(OcsyncError):
    pass


@dataclass
class CommitRecord:
    action: str  # "add", "modify" or "delete"
    path: str
    commit_id: str


@dataclass
class CommitReport:
    committed: list[CommitRecord] = field(default_factory=list)
    held_deletions: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def commit_time(now: int, parent_time: int | None) -> int:
    """Never below the parent's time: a clock that is behind gets the parent's time plus one second."""
    if parent_time is None or now >= parent_time:
        return now
    return parent_time + 1


def trusted_stat_cache(folder: "FolderRepo") -> StatCache:
    """The stat cache, reconciled with HEAD's tree unless it records that it describes exactly that tree."""
    cache = load_stat_cache(folder.git_dir)
    head = folder.head()
    if head is not None and head == cache.commit_id:
        tree = cache.tree_id  # commit ids name their content: this commit's tree is the one recorded
    else:
        tree = folder.repo.object_store[head].tree if head else None
    if cache.tree_id == tree and (tree is not None or not cache.entries):
        return cache
    return reconciled(cache, folder, tree)


def reconciled(cache: StatCache, folder: "FolderRepo", tree: bytes | None) -> StatCache:
    """Entries for exactly the files of `tree`; stat data kept only where the blob and mode agree."""
    entries = {}
    for path, tree_file in flatten_tree(folder.repo.object_store, tree).items():
        blob = bytes.fromhex(tree_file.sha.decode("ascii"))
        old = cache.entries.get(path)
        if old is not None and old[1] == blob and mode_of(old[0]) == tree_file.mode:
            entries[path] = old
        else:
            entries[path] = (unknown_stat(tree_file.mode), blob)
    return StatCache(entries, tree, cache.written_ns)


def smudge_unverified(cache: StatCache, verified: set[bytes]) -> None:
    """Zero the mtime of entries that were racy against the index being replaced and that nobody
    re-read: against the new index they would look clean, so an edit in that tick would be missed."""
    entries, written_ns = cache.entries, cache.written_ns
    for relpath, (stat, blob) in entries.items():
        mtime_ns = mtime_ns_of(stat)
        if mtime_ns and mtime_ns >= written_ns and relpath not in verified:
            entries[relpath] = (smudged(stat), blob)


class _Run:
    """One committer run: builds commits on top of main and lands them."""

    def __init__(self, folder: "FolderRepo", identity: DeviceIdentity, cache: StatCache, now: int) -> None:
        self.folder = folder
        self.identity = identity.git_identity
        self.cache = cache
        self.verified: set[bytes] = set()
        self.store = folder.repo.object_store
        self.landed_head = folder.head()
        self.head = self.landed_head
        head_commit = self.store[self.head] if self.head else None
        self.time = commit_time(now, head_commit.commit_time if head_commit else None)
        self.builder = TreeBuilder(self._read_tree, bytes.fromhex(head_commit.tree.decode()) if head_commit else None)
        self.records: list[CommitRecord] = []
        self.added_blobs: set[bytes] = set()
        self.look_up_store = False
        self.cache_changed = cache.tree_id != (head_commit.tree if head_commit else None)

    def _read_tree(self, sha: bytes) -> bytes:
        return self.store.get_raw(sha.hex().encode("ascii"))[1]

    def record_stat(self, relpath: bytes, stat: bytes, blob: bytes) -> None:
        self.cache.entries[relpath] = (stat, blob)
        self.verified.add(relpath)
        self.cache_changed = True

    def commit_file(self, relpath: bytes, read: ReadFile) -> None:
        blob = hash_object(BLOB_TYPE, read.data)
        old = self.cache.entries.get(relpath)
        if old is not None and old[1] == blob and mode_of(old[0]) == read.git_mode:
            self.record_stat(relpath, read.stat, blob)  # touched, not changed
            return
        if blob not in self.added_blobs and blob not in self.tracked_blobs and not self._in_store(blob):
            self.builder.add_blob(blob, read.data)
        self.builder.set_file(relpath, read.git_mode, blob)
        self.added_blobs.add(blob)
        self._commit("modify" if old is not None else "add", relpath)
        self.record_stat(relpath, read.stat, blob)

    @functools.cached_property
    def tracked_blobs(self) -> set[bytes]:
        return {blob for _, blob in self.cache.entries.values()}

    def _in_store(self, blob: bytes) -> bool:
        return self.look_up_store and blob.hex().encode("ascii") in self.store

    def commit_deletion(self, relpath: bytes) -> None:
        self.builder.remove_file(relpath)
        self._commit("delete", relpath)
        self.cache.entries.pop(relpath, None)
        self.cache_changed = True

    def _commit(self, action: str, relpath: bytes) -> None:
        tree = self.builder.root_tree()
        parents = [bytes.fromhex(self.head.decode("ascii"))] if self.head else []
        message = action.encode("ascii") + b" " + relpath
        commit = self.builder.add_commit(commit_raw(tree, parents, self.identity, self.time, message))
        self.head = commit.hex().encode("ascii")
        self.records.append(CommitRecord(action, shown(relpath), self.head.decode("ascii")))
        if self.builder.pending_bytes >= PACK_BYTES_LIMIT:
            self.land()

    def land(self) -> None:
        """Write the pending objects as one pack, then move main (objects always land before the ref)."""
        if self.head == self.landed_head:
            return
        add_entries_to_store(self.store, self.builder.take_entries())
        self.folder.set_head(self.head, self.landed_head)
        self.landed_head = self.head

    def save_cache(self) -> None:
        if not self.cache_changed:
            return
        smudge_unverified(self.cache, self.verified)
        tree = self.store[self.head].tree if self.head else None
        save_stat_cache(self.folder.git_dir, self.cache.entries, tree, self.head)


def _normalised(paths: Iterable[str | bytes]) -> list[bytes]:
    result = []
    for path in paths:
        raw = os.fsencode(path).strip(b"/")
        if not raw or raw.startswith(b"/") or any(part in (b"", b".", b"..") for part in raw.split(b"/")):
            raise ValueError(f"not a relative path inside a folder: {path!r}")
        result.append(raw)
    return result


def _blocking(relpath: bytes, deletions: set[bytes], deletion_dirs: set[bytes]) -> list[bytes]:
    """Tracked paths that must be deleted before relpath can be added: a file where one of its parent
    directories goes, or files below a directory where relpath goes."""
    found = []
    parts = relpath.split(b"/")
    for depth in range(1, len(parts)):
        parent = b"/".join(parts[:depth])
        if parent in deletions:
            found.append(parent)
    if relpath in deletion_dirs:
        prefix = relpath + b"/"
        found.extend(path for path in deletions if path.startswith(prefix))
    return found


def commit_pending(
    folder: "FolderRepo",
    identity: DeviceIdentity,
    *,
    confirm_deletions: bool = False,
    progress: Callable[[int, int], None] | None = None,
    paths: Iterable[str | bytes] | None = None,
    clock: Callable[[], float] = time.time,
) -> CommitReport:
    """Commit every pending change in the folder (or only at `paths`), one commit per file."""
    scope = None if paths is None else _normalised(paths)
    cache = trusted_stat_cache(folder)
    walk = walk_folder(folder.path, cache, IgnoreRules(folder.path), scope)
    report = CommitReport(skipped=list(walk.skipped))
    if walk.missing and not folder.marker_present:
        raise MarkerMissingError(
            f"{folder.path / FOLDER_MARKER} is missing, and {len(walk.missing)} tracked files are gone: is the "
            f"folder's disk unmounted? Nothing was committed. If the folder is really there, restore the "
            f"marker with `ocsync init {folder.path}`"
        )
    if not walk.candidates and not walk.missing:
        return report  # nothing to commit or record: skip reading HEAD and building trees
    tracked = cache.tracked_count()
    run = _Run(folder, identity, cache, int(clock()))
    run.look_up_store = len(walk.candidates) <= _STORE_LOOKUPS_UP_TO
    deletions = set(walk.missing)
    deletion_dirs = {path.rsplit(b"/", 1)[0] for path in deletions if b"/" in path}
    for path in list(deletion_dirs):
        while b"/" in path:
            path = path.rsplit(b"/", 1)[0]
            deletion_dirs.add(path)
    total = len(walk.candidates) + len(deletions)
    done = 0
    # Path order: a stable history, and new entries mostly land at the end of their trees.
    for candidate in sorted(walk.candidates, key=lambda candidate: candidate.relpath):
        done += 1
        if progress and done % _PROGRESS_EVERY == 0:
            progress(done, total)
        _commit_candidate(run, folder, candidate, deletions, deletion_dirs, report)
    renames = sorted(path for path in deletions if cache.entries[path][1] in run.added_blobs)
    plain = sorted(deletions.difference(renames))
    held = len(plain) > tracked / 2 and len(plain) > 10 and not confirm_deletions
    for relpath in renames + ([] if held else plain):
        done += 1
        if progress and done % _PROGRESS_EVERY == 0:
            progress(done, total)
        run.commit_deletion(relpath)
    if held:
        report.held_deletions = [shown(path) for path in plain]
    run.land()
    run.save_cache()
    if progress and total:
        progress(total, total)
    report.committed = run.records
    return report


def _commit_candidate(
    run: _Run,
    folder: "FolderRepo",
    candidate: Candidate,
    deletions: set[bytes],
    deletion_dirs: set[bytes],
    report: CommitReport,
) -> None:
    read = read_candidate(folder.path, candidate)
    if isinstance(read, str):
        report.skipped.append((shown(candidate.relpath), read))
        return
    if deletions:
        for blocking in _blocking(candidate.relpath, deletions, deletion_dirs):
            deletions.discard(blocking)  # a file turned into a directory, or back: not a held deletion
            run.commit_deletion(blocking)
    try:
        run.commit_file(candidate.relpath, read)
    except PathConflict as conflict:
        report.skipped.append((shown(candidate.relpath), f"{shown(conflict.path)} is in the way in the repository"))


def refresh_after_checkout(folder: "FolderRepo", tree_id: bytes | None, relpaths: Iterable[str | bytes]) -> None:
    """Record files another component just wrote from tree `tree_id` (hex) as clean, so the next scan
    does not mistake a peer's content for a local edit. Each path is re-read and recorded only if its
    content is the tree's; anything else (a local edit since) stays a change for the committer."""
    cache = reconciled(load_stat_cache(folder.git_dir), folder, tree_id)
    verified: set[bytes] = set()
    for relpath in _normalised(relpaths):
        entry = cache.entries.get(relpath)
        if entry is None:
            continue
        mode, blob = mode_of(entry[0]), entry[1]
        read = hash_candidate(folder.path, Candidate(relpath, mode))
        if isinstance(read, HashedFile) and read.git_mode == mode and read.blob == blob:
            cache.entries[relpath] = (read.stat, blob)
            verified.add(relpath)
    smudge_unverified(cache, verified)
    save_stat_cache(folder.git_dir, cache.entries, tree_id)

