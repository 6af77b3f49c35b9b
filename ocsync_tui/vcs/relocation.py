"""Conflict-copy names for tree paths that cannot be placed on this disk.

Named as every conflict copy is (conflict_names), after the last device commit that changed the path,
so every run — including the one that finishes a journal after a crash — picks the same name.
"""

from collections.abc import Iterator, Mapping

from dulwich.object_store import BaseObjectStore, tree_lookup_path
from dulwich.walk import Walker

from ocsync_tui.vcs.checkout import TreeFile
from ocsync_tui.vcs.conflict_names import conflict_copy_names, conflict_copy_origin


def _committer_device(committer: bytes) -> str:
    return committer.rpartition(b"<")[2].partition(b">")[0].rpartition(b"@")[0].decode("utf-8", "replace")


class RelocationNamer:
    """Candidate disk paths, best first, for the tree paths of commit `head` (whose files are `files`)."""

    def __init__(self, store: BaseObjectStore, head: bytes, files: Mapping[bytes, TreeFile]) -> None:
        self._store = store
        self._head = head
        self._files = files

    def _last_change(self, path: bytes) -> tuple[int, str]:
        """(commit time, device ID) of the newest non-merge commit that changed `path` (or below it)."""
        for entry in Walker(self._store, [self._head], paths=[path]):
            if len(entry.commit.parents) <= 1:
                return entry.commit.commit_time, _committer_device(entry.commit.committer)
        head = self._store[self._head]
        return head.commit_time, _committer_device(head.committer)

    def __call__(self, path: bytes, component: int) -> Iterator[bytes]:
        """Candidates for `path` with its `component`-th part renamed. A folder is named after itself
        (its last change, its tree id), so every file under it moves to the same copy of the folder."""
        parts = path.split(b"/")
        moved = b"/".join(parts[: component + 1])
        below = parts[component + 1 :]
        when, device_id = self._last_change(moved)
        if below:
            content_id = tree_lookup_path(self._store.__getitem__, self._store[self._head].tree, moved)[1]
        else:
            content_id = self._files[path].sha
        moved_text = moved.decode("utf-8", "surrogateescape")
        # A conflict copy that must move again is named after its original, never a copy of a copy.
        origin = conflict_copy_origin(moved_text) or moved_text
        for candidate in conflict_copy_names(origin, when, device_id, content_id):
            yield b"/".join([candidate.encode("utf-8", "surrogateescape"), *below])
