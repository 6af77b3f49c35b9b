"""The stat cache: git's own index (`.git/index`, version 2), so `git status` in a folder stays clean.

Each entry maps a path to the 40 stat bytes git records (ctime, mtime, dev, ino, mode, uid, gid, size)
and its blob id. A scan compares a fresh lstat's (mtime, ctime, size, inode) with the entry's, so an
unchanged file costs one lstat and one comparison. A file is re-read when they differ or the entry is
racy: modified no earlier than the index was written, where an edit in the same timestamp tick would not
show (git's rule).

The index's cache-tree extension (`TREE`, written for the root only) names the tree the entries
describe; git keeps it valid across stat refreshes and invalidates it when it stages anything. A missing,
invalid or different tree id means git (or a crash between moving main and writing the index) changed
the entries since we wrote them; the committer then reconciles them with HEAD's tree before trusting them.

Parsing 100,000 index entries in Python takes longer than walking the folder, so beside the index lies
`ocsync-statcache`: what a no-change scan needs (the tree id and, per directory, its rows: the sorted
(name, mtime_ns, ctime_ns, size, inode) of its tracked files, kept marshalled so that loading it creates
no per-file objects and a walk compares a whole directory as one bytes comparison), tagged with the size,
mtime, inode and checksum of the index it was made from. It is used only while the index is exactly that
file; otherwise the index is parsed and the blob remade. The entries themselves are parsed from the index
only when a scan finds something to commit.
The cache is only ever a cache: losing it costs re-reading files, never a change.
"""

import hashlib
import marshal
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

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
Entries = dict[bytes, tuple[bytes, bytes]]
# directory -> (its rows as `rows_blob` makes them, the newest mtime_ns among them, how many)
DirectoryRows = dict[bytes, tuple[bytes, int, int]]
SIDECAR_NAME = "ocsync-statcache"
_SIDECAR_FORMAT = 4
# Version 0: no back-references and no interning flag, so equal rows always marshal to equal bytes.
_ROWS_MARSHAL_VERSION = 0


def rows_blob(rows: list[tuple[str, int, int, int, int]]) -> bytes:
    """One directory's (name, *QuickKey) rows, sorted in place, as bytes equal for equal rows. Names are
    str as os.scandir gives them (os.fsdecode of the index's names), sparing the walk an encode per file."""
    rows.sort()
    return marshal.dumps(rows, _ROWS_MARSHAL_VERSION)


class StatCache:
    """entries: path -> (40 stat bytes, 20-byte blob id); tree_id: hex id they describe, if known;
    written_ns: mtime of the index they were read from (entries at or after it are racy); commit_id: the
    commit whose tree is tree_id, when the writer said so (saves reading that commit to compare)."""

    def __init__(
        self,
        entries: Entries | None = None,
        tree_id: bytes | None = None,
        written_ns: int = 0,
        *,
        directory_rows: DirectoryRows | None = None,
        parse_entries: Callable[[], Entries] | None = None,
        commit_id: bytes | None = None,
    ) -> None:
        self._entries = entries if entries is not None or parse_entries else {}
        self._parse_entries = parse_entries
        self.tree_id = tree_id
        self.commit_id = commit_id
        self.written_ns = written_ns
        self._directory_rows = directory_rows
        self._tracked: dict[bytes, dict[bytes, QuickKey]] = {}

    @property
    def entries(self) -> Entries:
        if self._entries is None:
            assert self._parse_entries is not None
            self._entries = self._parse_entries()
        return self._entries

    @property
    def directory_rows(self) -> DirectoryRows:
        """directory (b"" for the root) -> its tracked files' rows (see `rows_blob`), their newest
        mtime_ns and their count: what a walk compares a whole directory listing with."""
        if self._directory_rows is None:
            self._directory_rows = _directory_rows(self.entries)
        return self._directory_rows

    def tracked_in(self, directory: bytes) -> dict[bytes, QuickKey]:
        """File name -> the quick key of its entry: (mtime_ns, ctime_ns, size, inode), truncated as the
        index holds them; what a walk compares one lstat with. Empty for a directory with none."""
        tracked = self._tracked.get(directory)
        if tracked is None:
            rows = self.directory_rows.get(directory)
            tracked = {} if rows is None else {os.fsencode(row[0]): row[1:] for row in marshal.loads(rows[0])}
            self._tracked[directory] = tracked
        return tracked

    @property
    def by_directory(self) -> dict[bytes, dict[bytes, QuickKey]]:
        """Every directory with tracked files -> `tracked_in(directory)`."""
        return {directory: self.tracked_in(directory) for directory in self.directory_rows}

    def tracked_count(self) -> int:
        if self._entries is None:
            return sum(count for _, _, count in self.directory_rows.values())
        return len(self._entries)


def _directory_rows(entries: Entries) -> DirectoryRows:
    rows_by_directory: dict[bytes, list[tuple[str, int, int, int, int]]] = {}
    for path, (stat, _) in entries.items():
        directory, _, name = path.rpartition(b"/")
        ctime_s, ctime_ns, mtime_s, mtime_ns, _, ino, _, _, _, size = _STAT.unpack(stat)
        rows_by_directory.setdefault(directory, []).append(
            (os.fsdecode(name), mtime_s * 1_000_000_000 + mtime_ns, ctime_s * 1_000_000_000 + ctime_ns, size, ino)
        )
    return {
        directory: (rows_blob(rows), max(row[1] for row in rows), len(rows))
        for directory, rows in rows_by_directory.items()
    }


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
            identity = os.fstat(handle.fileno())
            data = handle.read()
    except FileNotFoundError:
        return StatCache()
    if len(data) < _HEADER.size + 20:
        return StatCache()
    sidecar = _read_sidecar(Path(git_dir), identity, data[-20:])
    if sidecar is not None:
        tree_id, commit_id, directory_rows = sidecar
        return StatCache(
            None,
            tree_id,
            identity.st_mtime_ns,
            directory_rows=directory_rows,
            parse_entries=lambda: _parse_or_empty(data, path)[0],
            commit_id=commit_id,
        )
    entries, tree_id = _parse_or_empty(data, path)
    cache = StatCache(entries, tree_id, identity.st_mtime_ns)
    _write_sidecar(Path(git_dir), identity, data[-20:], cache)
    return cache


def _parse_or_empty(data: bytes, path: Path) -> tuple[Entries, bytes | None]:
    try:
        return _parse(data, path)
    except (ValueError, struct.error, KeyError, AssertionError):
        return {}, None


def _parse(data: bytes, path: Path) -> tuple[Entries, bytes | None]:
    signature, version, count = _HEADER.unpack_from(data)
    if signature != _SIGNATURE or hashlib.sha1(data[:-20]).digest() != data[-20:]:
        raise ValueError("not a git index")
    if version not in (2, 3):
        return _parse_with_dulwich(path), None
    entries: Entries = {}
    offset = _HEADER.size
    for _ in range(count):
        flags = int.from_bytes(data[offset + 60 : offset + 62], "big")
        start = offset + _FIXED + (2 if flags & _EXTENDED_FLAG else 0)
        name_length = flags & _NAME_MASK
        end = data.index(b"\0", start) if name_length == _NAME_MASK else start + name_length
        if not flags & 0x3000:  # stage 0 only: entries of an unfinished git merge are not ours to trust
            entries[data[start:end]] = (data[offset : offset + 40], data[offset + 40 : offset + 60])
        offset += (end - offset + 8) & ~7
    return entries, _read_root_tree(data, offset, len(entries))


def _sidecar_tag(identity: os.stat_result, checksum: bytes) -> tuple:
    return (_SIDECAR_FORMAT, identity.st_size, identity.st_mtime_ns, identity.st_ino, checksum)


def _read_sidecar(
    git_dir: Path, identity: os.stat_result, checksum: bytes
) -> tuple[bytes | None, bytes | None, DirectoryRows] | None:
    try:
        tag, tree_id, commit_id, directory_rows = marshal.loads((git_dir / SIDECAR_NAME).read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if tag != _sidecar_tag(identity, checksum):
        return None
    return tree_id, commit_id, directory_rows


def _write_sidecar(git_dir: Path, identity: os.stat_result, checksum: bytes, cache: StatCache) -> None:
    """Best effort: without it the next scan parses the index instead."""
    blob = marshal.dumps((_sidecar_tag(identity, checksum), cache.tree_id, cache.commit_id, cache.directory_rows))
    temp = git_dir / (SIDECAR_NAME + ".tmp")
    try:
        temp.write_bytes(blob)
        os.replace(temp, git_dir / SIDECAR_NAME)
    except OSError:
        pass


def _parse_with_dulwich(path: Path) -> dict[bytes, tuple[bytes, bytes]]:
    from dulwich.index import read_index_dict  # only for index version 4, which git writes on request

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
    git_dir: str | os.PathLike[str],
    entries: Mapping[bytes, tuple[bytes, bytes]],
    tree_id: bytes | None,
    commit_id: bytes | None = None,
) -> None:
    """Write .git/index atomically (temp file, fsync, rename): git and we never see half an index.
    `commit_id`, if given, is the commit whose tree `tree_id` is."""
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
    checksum = hashlib.sha1(body).digest()
    with open(temp, "wb") as handle:
        handle.write(body)
        handle.write(checksum)
        handle.flush()
        os.fsync(handle.fileno())
        identity = os.fstat(handle.fileno())
    os.replace(temp, path)
    _write_sidecar(Path(git_dir), identity, checksum, StatCache(dict(entries), tree_id, commit_id=commit_id))
