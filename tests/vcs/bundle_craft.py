"""Hand-made git objects and bundles, including ones no honest peer would send.

Trees are serialised here rather than by dulwich's Tree, which would refuse or reorder the hostile
entries these tests need (duplicate names, `..`, names with slashes or NUL).
"""

import io
import stat
from pathlib import Path

from ocsync_tui.vcs.pack import PackEntry, object_id, write_pack

BLOB, TREE, COMMIT = 3, 2, 1
FILE_MODE, SYMLINK_MODE, TREE_MODE = 0o100644, 0o120000, 0o040000
AUTHOR = b"Mallory <AAAAAAA-BBBBBBB-CCCCCCC-DDDDDDD-EEEEEEE-FFFFFFF-GGGGGGG-HHHHHHH@ocsync.invalid>"


class Crafter:
    """Collects objects for one pack; every method returns the new object's hex id."""

    def __init__(self) -> None:
        self.entries: dict[bytes, PackEntry] = {}

    def _add(self, type_num: int, raw: bytes) -> bytes:
        sha = object_id(type_num, raw)
        self.entries.setdefault(sha, PackEntry(sha, type_num, raw))
        return sha

    def blob(self, content: bytes) -> bytes:
        return self._add(BLOB, content)

    def tree(self, entries: list[tuple[bytes, int, bytes]]) -> bytes:
        """A tree of (name, mode, hex id) entries, sorted as git sorts them, duplicates kept."""
        ordered = sorted(entries, key=lambda e: e[0] + (b"/" if stat.S_ISDIR(e[1]) else b""))
        raw = b"".join(b"%o %s\0" % (mode, name) + bytes.fromhex(sha.decode()) for name, mode, sha in ordered)
        return self._add(TREE, raw)

    def files(self, files: dict[bytes, bytes]) -> bytes:
        """A well-formed tree holding {path: content}."""
        subtrees: dict[bytes, dict[bytes, bytes]] = {}
        entries = []
        for path, content in files.items():
            head, _, rest = path.partition(b"/")
            if rest:
                subtrees.setdefault(head, {})[rest] = content
            else:
                entries.append((head, FILE_MODE, self.blob(content)))
        entries += [(name, TREE_MODE, self.files(sub)) for name, sub in subtrees.items()]
        return self.tree(entries)

    def commit(self, tree: bytes, parents: list[bytes] = (), when: int = 1_700_000_000) -> bytes:
        raw = b"tree " + tree + b"\n"
        raw += b"".join(b"parent " + parent + b"\n" for parent in parents)
        raw += b"author %s %d +0000\ncommitter %s %d +0000\n\ncrafted\n" % (AUTHOR, when, AUTHOR, when)
        return self._add(COMMIT, raw)

    def pack_bytes(self) -> bytes:
        out = io.BytesIO()
        write_pack(out, list(self.entries.values()), len(self.entries))
        return out.getvalue()

    def write_bundle(self, path: Path, head: bytes, prerequisites: list[bytes] = (), pack: bytes | None = None) -> Path:
        header = b"# v2 git bundle\n"
        header += b"".join(b"-" + prerequisite + b"\n" for prerequisite in prerequisites)
        header += head + b" refs/heads/main\n\n"
        path.write_bytes(header + (self.pack_bytes() if pack is None else pack))
        return path
