"""Conflict-copy names for tree paths that cannot be placed on this disk.

Named as DESIGN.md names conflict copies (`name.sync-conflict-YYYYMMDD-HHMMSS-DEVSHORT.ext`), from the
last commit that touched the path, so every run — including the one that finishes a journal after a
crash — picks the same name.
"""

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from dulwich.object_store import BaseObjectStore
from dulwich.walk import Walker

from ocsync_tui.identity import short_device_id
from ocsync_tui.vcs.checkout import TreeFile

_DEVICE_EMAIL_DOMAIN = b"@ocsync.invalid>"


def _last_touch(store: BaseObjectStore, head: bytes, path: bytes) -> tuple[int, str]:
    """(commit time, short device ID) of the newest single-parent commit changing `path`."""
    for entry in Walker(store, [head], paths=[path]):
        commit = entry.commit
        if len(commit.parents) <= 1 and commit.author.endswith(_DEVICE_EMAIL_DOMAIN):
            email = commit.author.rsplit(b"<", 1)[1][: -len(_DEVICE_EMAIL_DOMAIN)]
            return commit.commit_time, short_device_id(email.decode("ascii", "replace"))
    head_commit = store[head]
    return head_commit.commit_time, "ocsync"


def _split_extension(name: bytes, is_directory: bool) -> tuple[bytes, bytes]:
    stem, dot, ext = name.rpartition(b".")
    if is_directory or not stem or not dot:
        return name, b""
    return stem, b"." + ext


class RelocationNamer:
    """Candidate disk paths for tree paths of commit `head`, best first."""

    def __init__(self, store: BaseObjectStore, head: bytes, files: Mapping[bytes, TreeFile]) -> None:
        self._store = store
        self._head = head
        self._files = files

    def __call__(self, path: bytes, component: int) -> Iterator[bytes]:
        parts = path.split(b"/")
        when, device = _last_touch(self._store, self._head, path)
        stamp = datetime.fromtimestamp(when, UTC).strftime("%Y%m%d-%H%M%S").encode("ascii")
        stem, ext = _split_extension(parts[component], is_directory=component < len(parts) - 1)
        base = stem + b".sync-conflict-" + stamp + b"-" + device.encode("ascii")
        content_hash = self._files[path].sha[:7]
        for suffix in [b"", b"-" + content_hash] + [b"-%d" % n for n in range(2, 1000)]:
            yield b"/".join(parts[:component] + [base + suffix + ext] + parts[component + 1 :])
