"""Commit histories for tests, written straight into an object store with explicit devices and times.

    history = History()
    base = history.commit(None, {"a.txt": b"one"}, device=DEVICE_A, time=100)
    left = history.commit(base, {"a.txt": b"two"}, device=DEVICE_B, time=200)
    right = history.commit(base, {"a.txt": None}, device=DEVICE_A, time=150)   # None deletes
    result = history.merge(left, right)     # merge_heads, with its new objects written to the store

A change's content is bytes (a regular file), None (delete) or (mode, bytes) for an executable or a
symlink. Commits look like the committer's: `Name <DEVICE-ID@ocsync.invalid>`, "add/modify/delete PATH".
"""

import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.index import commit_tree
from dulwich.object_store import BaseObjectStore, MemoryObjectStore
from dulwich.objects import Blob, Commit

from ocsync_tui.identity import format_device_id
from ocsync_tui.vcs.merge import MergeResult, merge_heads

REGULAR = 0o100644
EXECUTABLE = 0o100755
SYMLINK = 0o120000

Change = bytes | tuple[int, bytes] | None


def device_id(number: int) -> str:
    """A valid device ID; a larger number gives a device ID that sorts later."""
    return format_device_id(bytes([number]) * 32)


DEVICE_A, DEVICE_B, DEVICE_C = device_id(1), device_id(2), device_id(3)
assert DEVICE_A < DEVICE_B < DEVICE_C


def write_unchecked_object(repo_path: Path, kind: bytes, raw: bytes) -> bytes:
    """Store bytes as a loose object of `kind` (b"tree", b"commit") unchecked, as a peer's pack could
    deliver them; returns the object id."""
    data = b"%s %d\0" % (kind, len(raw)) + raw
    object_id = hashlib.sha1(data).hexdigest()
    path = repo_path / ".git" / "objects" / object_id[:2] / object_id[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zlib.compress(data))
    return object_id.encode("ascii")


@dataclass
class History:
    store: BaseObjectStore = field(default_factory=MemoryObjectStore)

    def entries(self, commit_id: bytes) -> dict[str, tuple[int, bytes]]:
        """Every file of a commit: path → (mode, content)."""
        tree_id = self.store[commit_id].tree
        return {
            entry.path.decode("utf-8"): (entry.mode, self.store[entry.sha].data)
            for entry in self.store.iter_tree_contents(tree_id)
        }

    def files(self, commit_id: bytes) -> dict[str, bytes]:
        """Every file of a commit: path → content (a symlink's content is its target)."""
        return {path: content for path, (_, content) in self.entries(commit_id).items()}

    def commit(
        self,
        parents: bytes | list[bytes] | None,
        changes: Mapping[str, Change],
        *,
        device: str,
        time: int,
        name: str = "Test device",
    ) -> bytes:
        parent_ids = [] if parents is None else [parents] if isinstance(parents, bytes) else list(parents)
        files = {
            path.encode("utf-8"): (mode, sha)
            for path, (mode, sha) in self._tree_files(parent_ids[0] if parent_ids else None).items()
        }
        subjects = []
        for path, change in changes.items():
            key = path.encode("utf-8")
            verb = "delete" if change is None else "modify" if key in files else "add"
            subjects.append(f"{verb} {path}")
            if change is None:
                del files[key]
                continue
            mode, content = (REGULAR, change) if isinstance(change, bytes) else change
            blob = Blob.from_string(content)
            self.store.add_object(blob)
            files[key] = (mode, blob.id)
        commit = Commit()
        commit.tree = commit_tree(self.store, [(path, sha, mode) for path, (mode, sha) in files.items()])
        commit.parents = parent_ids
        commit.author = commit.committer = f"{name} <{device}@ocsync.invalid>".encode()
        commit.author_time = commit.commit_time = time
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = ("\n".join(subjects) + "\n").encode("utf-8")
        self.store.add_object(commit)
        return commit.id

    def _tree_files(self, commit_id: bytes | None) -> dict[str, tuple[int, bytes]]:
        if commit_id is None:
            return {}
        return {
            entry.path.decode("utf-8"): (entry.mode, entry.sha)
            for entry in self.store.iter_tree_contents(self.store[commit_id].tree)
        }

    def merge(self, ours: bytes, theirs: bytes) -> MergeResult:
        """merge_heads, with the objects it returns written to the store (as the apply step does)."""
        result = merge_heads(self.store, ours, theirs)
        for obj in result.new_objects:
            self.store.add_object(obj)
        return result
