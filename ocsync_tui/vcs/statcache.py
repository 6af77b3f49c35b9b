"""The stat cache: git's own index (`.git/index`, version 2), so `git status` in a folder stays clean.

Each entry maps a path to the 40 stat bytes git records (ctime, mtime, dev, ino, mode, uid, gid, size)
and its blob id. A scan packs a fresh lstat the same way and compares bytes, so an unchanged file costs
one lstat and one comparison. A file is re-read when the bytes differ or the entry is racy: modified no
earlier than the index was written, where an edit in the same timestamp tick would not show (git's rule).

The index's cache-tree extension (`TREE`, written for the root only) names the tree the entries
describe; git keeps it valid across stat refreshes and invalidates it when it stages anything. A missing,
invalid or different tree id means git (or a crash between moving main and writing the index) changed
the entries since we wrote them; the committer then reconciles them with HEAD's tree before trusting them. The cache is only ever a cache: losing it costs re-reading
files, never a change.
"""

import hashlib
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.index import read_index_dict

INDEX_NAME = "index"
_SIGNATURE = b"DIRC"
_CACHE_TREE = b"TREE"
_STAT = struct.Struct(">10I")
_HEADER = struct.Struct(">4sII")
_FIXED = 62  # 40 stat bytes, 20 sha bytes, 2 flag bytes
_EXTENDED_FLAG = 0x4000
_NAME_MASK = 0xFFF
_U32 = 0xFFFFFFFF


QuickKey = tuple[int, int, int, int]


@dataclass
class StatCache:
    """entries: path -> (40 stat bytes, 20-byte blob id); tree_id: hex id they describe, if known."""

    entries: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)
    tree_id: bytes | None = None
    written_ns: int = 0
    _by_directory: dict[bytes, dict[bytes, QuickKey]] | None = None

    @property
    def by_directory(self) -> dict[bytes, dict[bytes, QuickKey]]:
        """directory (b"" for the root) -> file name -> quick_key of its entry: what a walk compares."""
        if self._by_directory is None:
            self._by_directory = {}
            for path, (stat, _) in self.entries.items():
                directory, _, name = path.rpartition(b"/")
                self._by_directory.setdefault(directory, {})[name] = _quick_key_of(stat)
        return self._by_directory


def quick_key(st: os.stat_result) -> QuickKey:
    """What an unchanged file keeps: mtime, ctime (chmod, chown and rename-over change it), size, inode;
    truncated to what the index holds."""
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size & _U32, st.st_ino & _U32)


def _quick_key_of(stat: bytes) -> QuickKey:
    ctime_s, ctime_ns, mtime_s, mtime_ns, _, ino, _, _, _, size = _STAT.unpack(stat)
    return (mtime_s * 1_000_000_000 + mtime_ns, ctime_s * 1_000_000_000 + ctime_ns, size, ino)


def stat_bytes(st: os.stat_result, git_mode: int) -> bytes:
    """The stat fields of an index entry, packed as git stores them (32-bit, truncated as git does)."""
    ctime_s, ctime_ns = divmod(st.st_ctime_ns, 1_000_000_000)
    mtime_s, mtime_ns = divmod(st.st_mtime_ns, 1_000_000_000)
    return _STAT.pack(
        ctime_s & _U32,
        ctime_ns,
        mtime_s & _U32,
        mtime_ns,
        st.st_dev & _U32,
        st.st_ino & _U32,
        git_mode,
        st.st_uid & _U32,
        st.st_gid & _U32,
        st.st_size & _U32,
    )


def unknown_stat(git_mode: int) -> bytes:
    """Stat bytes no file matches, for an entry whose content is known but whose stat is not."""
    return _STAT.pack(0, 0, 0, 0, 0, 0, git_mode, 0, 0, 0)


def smudged(stat: bytes) -> bytes:
    """The same entry with its mtime zeroed, so both we and git re-read the file next time."""
    return stat[:8] + b"\0" * 8 + stat[16:]


def mode_of(stat: bytes) -> int:
    return int.from_bytes(stat[24:28], "big")


def mtime_ns_of(stat: bytes) -> int:
    seconds, nanos = struct.unpack_from(">II", stat, 8)
    return seconds * 1_000_000_000 + nanos


def load_stat_cache(git_dir: str | os.PathLike[str]) -> StatCache:
    """Read .git/index; an absent, unreadable or unexpected index is an empty cache."""
    path = Path(git_dir) / INDEX_NAME
    try:
        with open(path, "rb") as handle:
            written_ns = os.fstat(handle.fileno()).st_mtime_ns
            data = handle.read()
    except FileNotFoundError:
        return StatCache()
    try:
        return _parse(data, path, written_ns)
    except (ValueError, struct.error, KeyError, AssertionError):
        return StatCache()


def _parse(data: bytes, path: Path, written_ns: int) -> StatCache:
    signature, version, count = _HEADER.unpack_from(data)
    if signature != _SIGNATURE or hashlib.sha1(data[:-20]).digest() != data[-20:]:
        raise ValueError("not a git index")
    if version not in (2, 3):
        return StatCache(_parse_with_dulwich(path), None, written_ns)
    entries: dict[bytes, tuple[bytes, bytes]] = {}
    by_directory: dict[bytes, dict[bytes, QuickKey]] = {}
    unpack_entry = struct.Struct(">10I20sH").unpack_from
    offset = _HEADER.size
    directory, names = None, {}
    for _ in range(count):
        ctime_s, ctime_ns, mtime_s, mtime_ns, _, ino, _, _, _, size, sha, flags = unpack_entry(data, offset)
        start = offset + _FIXED + (2 if flags & _EXTENDED_FLAG else 0)
        name_length = flags & _NAME_MASK
        end = data.index(b"\0", start) if name_length == _NAME_MASK else start + name_length
        if not flags & 0x3000:  # stage 0 only: entries of an unfinished git merge are not ours to trust
            path_bytes = data[start:end]
            entries[path_bytes] = (data[offset : offset + 40], sha)
            parent, _, name = path_bytes.rpartition(b"/")
            if parent != directory:  # index order keeps a directory's files mostly together
                directory = parent
                names = by_directory.setdefault(parent, {})
            names[name] = (mtime_s * 1_000_000_000 + mtime_ns, ctime_s * 1_000_000_000 + ctime_ns, size, ino)
        offset += (end - offset + 8) & ~7
    return StatCache(entries, _read_root_tree(data, offset, len(entries)), written_ns, by_directory)


def _parse_with_dulwich(path: Path) -> dict[bytes, tuple[bytes, bytes]]:
    entries = {}
    with open(path, "rb") as handle:
        index = read_index_dict(handle)
    for name, entry in index.items():
        if hasattr(entry, "ctime"):
            stat = _STAT.pack(
                int(entry.ctime[0]) & _U32,
                entry.ctime[1],
                int(entry.mtime[0]) & _U32,
                entry.mtime[1],
                entry.dev & _U32,
                entry.ino & _U32,
                entry.mode,
                entry.uid & _U32,
                entry.gid & _U32,
                entry.size & _U32,
            )
            entries[name] = (stat, bytes.fromhex(entry.sha.decode("ascii")))
    return entries


def _read_root_tree(data: bytes, offset: int, entry_count: int) -> bytes | None:
    """The root tree id of a valid cache-tree extension covering all entries, else None."""
    end = len(data) - 20
    while offset + 8 <= end:
        signature = data[offset : offset + 4]
        size = int.from_bytes(data[offset + 4 : offset + 8], "big")
        if signature == _CACHE_TREE:
            newline = data.index(b"\n", offset + 8)
            path, counts = data[offset + 8 : newline].split(b"\0", 1)
            covered = int(counts.split(b" ")[0])
            if path or covered != entry_count:
                return None
            return data[newline + 1 : newline + 21].hex().encode("ascii")
        offset += 8 + size
    return None


def save_stat_cache(
    git_dir: str | os.PathLike[str], entries: Mapping[bytes, tuple[bytes, bytes]], tree_id: bytes | None
) -> None:
    """Write .git/index atomically (temp file, fsync, rename): git and we never see half an index."""
    parts = [_HEADER.pack(_SIGNATURE, 2, len(entries))]
    append = parts.append
    for name in sorted(entries):
        stat, sha = entries[name]
        fixed_and_name = 62 + len(name)
        append(stat)
        append(sha)
        append(min(len(name), _NAME_MASK).to_bytes(2, "big"))
        append(name)
        append(b"\0" * (8 - fixed_and_name % 8))
    if tree_id is not None:
        # Root only, no subtrees: git trusts a valid root and rebuilds what it invalidates.
        root = b"\0%d 0\n" % len(entries) + bytes.fromhex(tree_id.decode("ascii"))
        append(_CACHE_TREE + len(root).to_bytes(4, "big") + root)
    body = b"".join(parts)
    path = Path(git_dir) / INDEX_NAME
    temp = path.with_name(INDEX_NAME + ".ocsync-tmp")
    with open(temp, "wb") as handle:
        handle.write(body)
        handle.write(hashlib.sha1(body).digest())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
