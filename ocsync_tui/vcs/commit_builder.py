"""Building per-file commits in memory: blobs, the trees along each changed path, commits, as PackEntries.

The folder's tree is held as nested directories, each a sorted list of git's serialised entries, loaded
lazily from the store along the paths that change. After each file change only the trees on its path are
re-serialised and hashed. Every new tree version is stored as a delta against an earlier version of the
same directory in the same pack, chosen skip-delta style (version i against i minus 16^k, k the position
of the lowest non-zero hex digit of i), so a chain stays at most 45 deep while a delta spans few entries;
a flat folder of 10,000 files then stores kilobytes of tree deltas instead of gigabytes of trees.
Against the previous version the builder knows the one entry that changed, so it writes that delta
(copy, insert, copy) directly instead of searching for it.
"""

import bisect
import hashlib
from collections.abc import Callable

from dulwich.objects import object_header

from ocsync_tui.vcs.delta import _emit_copy, _emit_insert, _size_varint, create_delta
from ocsync_tui.vcs.pack import PackEntry
from ocsync_tui.vcs.paths import DIRECTORY_MODE

COMMIT_TYPE, TREE_TYPE, BLOB_TYPE = 1, 2, 3
_SKIP_BASE = 16
_VERSIONS_PER_FULL = _SKIP_BASE**3  # digit sum of i < 16^3 is at most 45 < pack.MAX_DELTA_DEPTH


class PathConflict(Exception):
    """A change needs a path that a file or directory of the other kind occupies; `path` names it."""

    def __init__(self, path: bytes) -> None:
        super().__init__(path)
        self.path = path


def hash_object(type_num: int, raw: bytes) -> bytes:
    """The binary git object id (pack.object_id gives the hex one)."""
    hasher = hashlib.sha1(object_header(type_num, len(raw)))
    hasher.update(raw)
    return hasher.digest()


def parse_tree_entries(raw: bytes) -> tuple[list[bytes], list[bytes]]:
    """git's sort keys and serialised entries of a tree, in order."""
    keys, chunks = [], []
    position, end = 0, len(raw)
    while position < end:
        space = raw.index(b" ", position)
        nul = raw.index(b"\0", space)
        name = raw[space + 1 : nul]
        keys.append(name + b"/" if raw[position:space] == b"40000" else name)
        chunks.append(raw[position : nul + 21])
        position = nul + 21
    return keys, chunks


def _entry(mode: int, name: bytes, sha: bytes) -> bytes:
    return b"%o %s\0%s" % (mode, name, sha)


_SEVERAL = (-1, 0, b"")  # more than one change since the last version written: no single splice


class _Directory:
    __slots__ = ("keys", "chunks", "subdirs", "dirty", "sha", "versions", "size", "splice")

    def __init__(self, keys: list[bytes], chunks: list[bytes], sha: bytes | None, size: int) -> None:
        self.keys = keys
        self.chunks = chunks
        self.subdirs: dict[bytes, _Directory] = {}
        self.dirty: set[bytes] = set()
        self.sha = sha  # binary id of the current content; None while it has unsaved changes
        self.versions: list[tuple[bytes, bytes]] = []  # (binary id, raw) written to the current pack
        self.size = size  # length of the serialised tree
        # (offset, bytes removed, bytes inserted) turning the last version written into the current one
        self.splice: tuple[int, int, bytes] | None = None

    def find(self, key: bytes) -> int | None:
        index = bisect.bisect_left(self.keys, key)
        return index if index < len(self.keys) and self.keys[index] == key else None

    def insert(self, index: int, key: bytes, chunk: bytes) -> None:
        self._note(index, 0, chunk)
        self.keys.insert(index, key)
        self.chunks.insert(index, chunk)

    def replace(self, index: int, chunk: bytes) -> None:
        self._note(index, len(self.chunks[index]), chunk)
        self.chunks[index] = chunk

    def delete(self, index: int) -> None:
        self._note(index, len(self.chunks[index]), b"")
        del self.keys[index], self.chunks[index]

    def _note(self, index: int, removed: int, inserted: bytes) -> None:
        if self.splice is None:
            # Sum the shorter side: appends in path order stay cheap in a directory of 10,000 files.
            if index <= len(self.chunks) - index:
                offset = sum(map(len, self.chunks[:index]))
            else:
                offset = self.size - sum(map(len, self.chunks[index:]))
            self.splice = (offset, removed, inserted)
        else:
            self.splice = _SEVERAL
        self.size += len(inserted) - removed


class TreeBuilder:
    """The working tree of one branch, changed one file at a time; collects the objects to pack."""

    def __init__(self, read_tree: Callable[[bytes], bytes], root_tree: bytes | None) -> None:
        """read_tree(binary id) returns a tree's raw content; root_tree is the binary id to start from."""
        self._read_tree = read_tree
        self._root = self._load(root_tree) if root_tree else _Directory([], [], None, 0)
        self._versioned: list[_Directory] = []
        self.entries: list[PackEntry] = []
        self.pending_bytes = 0

    def _load(self, sha: bytes) -> _Directory:
        raw = self._read_tree(sha)
        keys, chunks = parse_tree_entries(raw)
        return _Directory(keys, chunks, sha, len(raw))

    def _subdir(self, directory: _Directory, name: bytes, where: bytes, create: bool) -> _Directory | None:
        child = directory.subdirs.get(name)
        if child is not None:
            return child
        index = directory.find(name + b"/")
        if index is None:
            if directory.find(name) is not None:
                raise PathConflict(where + name)
            if not create:
                return None
            child = _Directory([], [], None, 0)
        else:
            child = self._load(directory.chunks[index][-20:])
        directory.subdirs[name] = child
        return child

    def _path_to(self, relpath: bytes, create: bool) -> tuple[list[tuple[_Directory, bytes]], bytes] | None:
        """The directories from the root down to relpath's parent, each with the name taken from it."""
        *parents, name = relpath.split(b"/")
        chain: list[tuple[_Directory, bytes]] = []
        directory, where = self._root, b""
        for component in parents:
            child = self._subdir(directory, component, where, create)
            if child is None:
                return None
            chain.append((directory, component))
            directory, where = child, where + component + b"/"
        chain.append((directory, name))
        return chain, name

    def _mark_dirty(self, chain: list[tuple[_Directory, bytes]]) -> None:
        for directory, name in chain:
            directory.dirty.add(name)
            directory.sha = None

    def set_file(self, relpath: bytes, mode: int, blob: bytes) -> None:
        """Record a file (binary blob id); PathConflict if a directory or a parent file is in the way."""
        found = self._path_to(relpath, create=True)
        assert found is not None
        chain, name = found
        leaf = chain[-1][0]
        if name in leaf.subdirs or leaf.find(name + b"/") is not None:
            raise PathConflict(relpath)
        chunk = _entry(mode, name, blob)
        index = bisect.bisect_left(leaf.keys, name)
        if index < len(leaf.keys) and leaf.keys[index] == name:
            leaf.replace(index, chunk)
        else:
            leaf.insert(index, name, chunk)
        self._mark_dirty(chain[:-1])
        leaf.sha = None

    def remove_file(self, relpath: bytes) -> None:
        try:
            found = self._path_to(relpath, create=False)
        except PathConflict:
            return  # a parent is a file: relpath is not in the tree
        if found is None:
            return
        chain, name = found
        leaf = chain[-1][0]
        index = leaf.find(name)
        if index is None:
            return
        leaf.delete(index)
        self._mark_dirty(chain[:-1])
        leaf.sha = None

    def add_blob(self, blob: bytes, data: bytes) -> None:
        self._add(PackEntry(blob.hex().encode("ascii"), BLOB_TYPE, data))

    def add_commit(self, raw: bytes) -> bytes:
        sha = hash_object(COMMIT_TYPE, raw)
        self._add(PackEntry(sha.hex().encode("ascii"), COMMIT_TYPE, raw))
        return sha

    def _add(self, entry: PackEntry) -> None:
        self.entries.append(entry)
        self.pending_bytes += len(entry.raw)

    def root_tree(self) -> bytes:
        """The binary id of the current root tree, writing every tree that changed since the last call."""
        sha = self._finish(self._root, is_root=True)
        assert sha is not None
        return sha

    def _finish(self, directory: _Directory, is_root: bool = False) -> bytes | None:
        """Write a changed directory's tree; None for an empty non-root one (git stores no empty trees)."""
        if directory.sha is not None:
            return directory.sha
        for name in directory.dirty:
            child = directory.subdirs[name]
            child_sha = self._finish(child)
            key = name + b"/"
            index = bisect.bisect_left(directory.keys, key)
            exists = index < len(directory.keys) and directory.keys[index] == key
            if child_sha is None:
                del directory.subdirs[name]
                if exists:
                    directory.delete(index)
                continue
            chunk = _entry(DIRECTORY_MODE, name, child_sha)
            if exists:
                directory.replace(index, chunk)
            else:
                directory.insert(index, key, chunk)
        directory.dirty.clear()
        if not directory.keys and not is_root:
            return None
        raw = b"".join(directory.chunks)
        directory.sha = sha = hash_object(TREE_TYPE, raw)
        self._add(self._tree_entry(directory, sha, raw))
        return sha

    def _tree_entry(self, directory: _Directory, sha: bytes, raw: bytes) -> PackEntry:
        versions = directory.versions
        if not versions:
            self._versioned.append(directory)
        number = len(versions) % _VERSIONS_PER_FULL
        versions.append((sha, raw))
        splice, directory.splice = directory.splice, None
        hex_sha = sha.hex().encode("ascii")
        if number == 0:
            return PackEntry(hex_sha, TREE_TYPE, raw)
        step = 1
        while number % (step * _SKIP_BASE) == 0:
            step *= _SKIP_BASE
        base_sha, base_raw = versions[-1 - step]
        if step == 1 and splice is not None and splice is not _SEVERAL:
            delta = _splice_delta(len(base_raw), *splice)
        else:
            delta = create_delta(base_raw, raw)
        if delta is None:
            return PackEntry(hex_sha, TREE_TYPE, raw)
        return PackEntry(hex_sha, TREE_TYPE, raw, base_sha.hex().encode("ascii"), delta)

    def take_entries(self) -> list[PackEntry]:
        """Hand over the objects built so far; later trees start new delta chains (a new pack)."""
        entries, self.entries, self.pending_bytes = self.entries, [], 0
        for directory in self._versioned:
            directory.versions = []
        self._versioned = []
        return entries


def _splice_delta(base_size: int, offset: int, removed: int, inserted: bytes) -> bytes:
    """The git delta of one splice: copy what precedes it, insert the new bytes, copy what follows."""
    out = bytearray(_size_varint(base_size) + _size_varint(base_size - removed + len(inserted)))
    _emit_copy(out, 0, offset)
    _emit_insert(out, inserted)
    _emit_copy(out, offset + removed, base_size - offset - removed)
    return bytes(out)


def commit_raw(tree: bytes, parents: list[bytes], identity: bytes, timestamp: int, message: bytes) -> bytes:
    """A commit object's content; tree and parents are binary ids, time in UTC."""
    lines = [b"tree " + tree.hex().encode("ascii")]
    lines += [b"parent " + parent.hex().encode("ascii") for parent in parents]
    lines.append(b"author %s %d +0000" % (identity, timestamp))
    lines.append(b"committer %s %d +0000" % (identity, timestamp))
    return b"\n".join(lines) + b"\n\n" + message + b"\n"
