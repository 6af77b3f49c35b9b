"""One file's history, and bringing back an earlier version of it as a new commit.

A revision of a file is a commit whose version of the path differs from its parent's (for a merge: from
every parent's, i.e. the merge itself produced that content, as a conflict copy does). Restoring writes
the old content through a temp file, fsync and rename, then commits that one path, so nothing else in
the folder changes and the restore itself is undoable like any other change.
"""

import heapq
import os
import time
from dataclasses import dataclass

from dulwich.objects import Commit, parse_tree

from ocsync_tui.errors import OcsyncError
from ocsync_tui.identity import DeviceIdentity
from ocsync_tui.vcs.checkout import CheckoutError, FolderFiles, TreeFile
from ocsync_tui.vcs.committer import commit_pending
from ocsync_tui.vcs.folder import FolderRepo
from ocsync_tui.vcs.pack_reader import object_chunks
from ocsync_tui.vcs.paths import DIRECTORY_MODE

_MEMO_LIMIT = 4096


class HistoryError(OcsyncError):
    pass


@dataclass(frozen=True)
class FileRevision:
    commit_id: str
    time: int
    time_text: str
    device_name: str
    device_id: str
    action: str  # "add", "modify" or "delete"


@dataclass(frozen=True)
class RestoreRecord:
    path: str
    commit_id: str
    source_rev: str


class _History:
    """The commits reachable from main, newest first, and the version of one path in each."""

    def __init__(self, folder: FolderRepo, relpath: str) -> None:
        self.store = folder.repo.object_store
        self.parts = os.fsencode(relpath).split(b"/")
        self.commits: dict[bytes, Commit] = {}
        head = folder.head()
        self.order = self._newest_first(head) if head else []
        self._memo: dict[tuple[bytes, int], TreeFile | None] = {}

    def _newest_first(self, head: bytes) -> list[bytes]:
        """Children always before their parents; among those ready, the later commit time first."""
        children_left: dict[bytes, int] = {}
        pending = [head]
        while pending:
            commit_id = pending.pop()
            if commit_id in self.commits:
                continue
            commit = self.store[commit_id]
            self.commits[commit_id] = commit
            for parent in commit.parents:
                children_left[parent] = children_left.get(parent, 0) + 1
                pending.append(parent)
        ready = [(-self.commits[head].commit_time, head)]
        order = []
        while ready:
            _, commit_id = heapq.heappop(ready)
            order.append(commit_id)
            for parent in self.commits[commit_id].parents:
                children_left[parent] -= 1
                if children_left[parent] == 0:
                    heapq.heappush(ready, (-self.commits[parent].commit_time, parent))
        return order

    def version(self, commit_id: bytes) -> TreeFile | None:
        """The path's (mode, blob id) at a commit, or None where it does not exist."""
        return self._lookup(self.commits[commit_id].tree, 0)

    def _lookup(self, tree_id: bytes, depth: int) -> TreeFile | None:
        key = (tree_id, depth)
        if key in self._memo:
            return self._memo[key]
        found = None
        name = self.parts[depth]
        for entry_name, mode, sha in parse_tree(self.store.get_raw(tree_id)[1], sha_len=20):
            if entry_name != name:
                continue
            last = depth == len(self.parts) - 1
            if last and mode != DIRECTORY_MODE:
                found = TreeFile(mode, sha)
            elif not last and mode == DIRECTORY_MODE:
                found = self._lookup(sha, depth + 1)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = found
        return found

    def revisions(self) -> list[tuple[bytes, str]]:
        """(commit id, action) of each commit that changed the path, newest first."""
        found = []
        for commit_id in self.order:
            current = self.version(commit_id)
            before = [self.version(parent) for parent in self.commits[commit_id].parents]
            if any(current == earlier for earlier in before) or (not before and current is None):
                continue
            first = before[0] if before else None
            action = "add" if first is None else "delete" if current is None else "modify"
            found.append((commit_id, action))
        return found

    def resolve(self, rev: str) -> bytes:
        text = rev.strip().lower()
        if len(text) < 4 or any(c not in "0123456789abcdef" for c in text):
            raise HistoryError(
                f"{rev!r} is not a revision: give at least 4 hex digits of a commit id from `ocsync log`"
            )
        matches = [commit_id for commit_id in self.commits if commit_id.decode("ascii").startswith(text)]
        if not matches:
            raise HistoryError(f"no commit {rev} in this folder's history")
        if len(matches) > 1:
            raise HistoryError(f"{rev} is ambiguous ({len(matches)} commits start with it); give more digits")
        return matches[0]


def _revision(commit: Commit, commit_id: bytes, action: str) -> FileRevision:
    author = commit.author.decode("utf-8", "replace")
    name, _, email = author.partition(" <")
    device_id = email.rstrip(">").split("@", 1)[0]
    text = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(commit.commit_time))
    return FileRevision(commit_id.decode("ascii"), commit.commit_time, text, name, device_id, action)


def file_log(folder: FolderRepo, relpath: str) -> list[FileRevision]:
    """Every commit that added, modified or deleted `relpath`, newest first."""
    history = _History(folder, relpath)
    return [_revision(history.commits[commit_id], commit_id, action) for commit_id, action in history.revisions()]


def _source(history: _History, relpath: str, rev: str | None) -> tuple[bytes, TreeFile]:
    """The commit to restore from and the file's version there."""
    if rev is not None:
        commit_id = history.resolve(rev)
        version = history.version(commit_id)
        if version is None:
            raise HistoryError(
                f"{relpath} did not exist at {rev}; pick a revision where it did from `ocsync log {relpath}`"
            )
        return commit_id, version
    revisions = history.revisions()
    if not revisions:
        raise HistoryError(f"{relpath} has never been committed in this folder")
    # The version before the current one; for a deleted file, its last content.
    for commit_id, action in revisions[1:] if revisions[0][1] != "delete" else revisions:
        if action != "delete":
            version = history.version(commit_id)
            assert version is not None
            return commit_id, version
    raise HistoryError(f"{relpath} has no earlier version to restore")


def restore_file(folder: FolderRepo, identity: DeviceIdentity, relpath: str, rev: str | None) -> RestoreRecord:
    """Put `relpath` back as it was at `rev` (default: its previous version) as one new commit."""
    # Whatever is on disk now is committed first, so the restore never loses an unsaved edit.
    commit_pending(folder, identity, paths=[relpath])
    history = _History(folder, relpath)
    source_id, version = _source(history, relpath, rev)
    head = folder.head()
    if head is not None and history.version(head) == version:
        raise HistoryError(f"{relpath} already is as it was at {source_id.decode('ascii')[:10]}")
    path = os.fsencode(relpath)
    try:
        with FolderFiles(folder.path) as files:
            files.write(path, version, object_chunks(history.store, version.sha))
            files.sync_touched_directories()
    except (CheckoutError, OSError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise HistoryError(f"cannot write {relpath}: {reason}") from None
    report = commit_pending(folder, identity, paths=[relpath])
    for record in report.committed:
        if record.path == relpath:
            return RestoreRecord(relpath, record.commit_id, source_id.decode("ascii"))
    raise HistoryError(f"{relpath} changed again while it was restored; check it and run the restore again")
