"""Writing git pack files (v2) from objects and ready-made deltas, for bundles and for the object store.

The callers decide what is a delta of what; this module only encodes, hashes, indexes and lands packs.

API (stable):

- ``PackEntry(sha, type_num, raw, delta_base=None, delta=None)``: one object. ``sha`` is the hex id of
  the object whose full content is ``raw`` (type_num 1-4: commit, tree, blob, tag). With ``delta_base``
  (hex id) and ``delta`` (git delta format: ``apply_delta(base, delta) == raw``) the object is stored
  as a delta. A base written earlier in the same pack becomes an OFS_DELTA; any other base a
  REF_DELTA against an object outside the pack (which makes the pack thin: only bundles may be).
- ``write_pack(out, entries, object_count) -> WrittenPack``: streams a pack to a binary file object
  (need not be seekable). The header carries ``object_count`` up front, so the entries can be
  produced lazily; a different number of entries raises ``ValueError`` after the fact (the caller
  discards the file). So does an id written twice, a delta against itself, or an entry whose id an
  earlier entry already used as an outside (REF_DELTA) base: a receiver resolves such a base to the
  copy in the pack, which may itself be a delta of the referrer, and git refuses the pack. Every
  delta base thus lies earlier in the pack or outside it, and no chain can loop. Returns the pack
  checksum and the index entries.
- ``install_pack(pack_path, index_path, pack_dir, basename)``: the crash-safe move of a finished pack
  and index into a store, shared with the bundle import.
- ``add_entries_to_store(object_store, entries) -> None``: lands the entries as ONE pack plus its
  index in a dulwich ``DiskObjectStore``. Store packs must be self-contained, so a delta whose base is
  not an EARLIER entry of ``entries``, or that would make a chain deeper than ``MAX_DELTA_DEPTH``, is
  stored whole (list bases before the objects deltified against them). Repeated ids are written once.
  Every entry's id is checked against its content and every delta is checked to reproduce ``raw``
  before anything is written. Crash-safe: the pack and its index are written to temporary files
  and fsynced, then the pack is renamed into ``objects/pack`` before the index, and the directory is
  fsynced. git and dulwich only see a pack once its index exists, so a kill at any moment leaves
  either no new pack or a complete one (at worst an orphan ``tmp_pack_*`` or ``.pack`` file, which
  both ignore, and which the next write deletes once it is an hour old: ``remove_stale_leftovers``).
"""

import binascii
import os
import tempfile
import time
import zlib
from contextlib import suppress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from hashlib import sha1
from typing import BinaryIO

from dulwich.object_format import SHA1
from dulwich.object_store import DiskObjectStore
from dulwich.objects import object_header
from dulwich.pack import (
    OFS_DELTA,
    REF_DELTA,
    apply_delta,
    hex_to_sha,
    pack_header_chunks,
    pack_object_header,
    write_pack_index_v2,
)

STALE_AFTER_SECONDS = 3600
# git's default pack.depth: deeper chains make every read of the newest version slower.
MAX_DELTA_DEPTH = 50

_COMPRESSION_LEVEL = zlib.Z_DEFAULT_COMPRESSION
# Photos, videos and archives are compressed already: deflating them again costs ~15 s per 100 MB for
# nothing. A payload whose sample does not shrink by a tenth is stored (zlib level 0, a valid stream).
_INCOMPRESSIBLE_PROBE = 64 << 10
_INCOMPRESSIBLE_RATIO = 0.9
_GIT_MIN_DELTA_SIZE = 4


@dataclass(frozen=True, slots=True)
class PackEntry:
    """One object to pack: its full content, and optionally a delta against another object."""

    sha: bytes
    type_num: int
    raw: bytes
    delta_base: bytes | None = None
    delta: bytes | None = None

    def __post_init__(self) -> None:
        if (self.delta_base is None) != (self.delta is None):
            raise ValueError("PackEntry needs both delta_base and delta, or neither")


@dataclass(slots=True)
class WrittenPack:
    """What write_pack produced: the trailing checksum and one (binary sha, offset, crc32) per object."""

    checksum: bytes
    index_entries: list[tuple[bytes, int, int]]


def object_id(type_num: int, raw: bytes) -> bytes:
    """The hex git object id of an object of this type and content."""
    hasher = sha1(object_header(type_num, len(raw)))
    hasher.update(raw)
    return hasher.hexdigest().encode("ascii")


def write_pack(out: BinaryIO, entries: Iterable[PackEntry], object_count: int) -> WrittenPack:
    """Stream a v2 pack of exactly object_count entries to out; see the module docstring."""
    pack_hash = sha1()
    position = 0

    def emit(chunk: bytes, crc: int = 0) -> int:
        nonlocal position
        out.write(chunk)
        pack_hash.update(chunk)
        position += len(chunk)
        return binascii.crc32(chunk, crc)

    for chunk in pack_header_chunks(object_count):
        emit(chunk)
    index_entries = []
    offsets: dict[bytes, int] = {}
    outside_bases: set[bytes] = set()
    for entry in entries:
        _check_placement(entry, offsets, outside_bases)
        start = position
        if not _is_delta(entry):
            chunks = whole_entry_chunks(entry.type_num, entry.raw)
        elif entry.delta_base in offsets:
            header = pack_object_header(OFS_DELTA, start - offsets[entry.delta_base], len(entry.delta), SHA1)
            chunks = _entry_chunks(header, entry.delta)
        else:
            header = pack_object_header(REF_DELTA, hex_to_sha(entry.delta_base), len(entry.delta), SHA1)
            chunks = _entry_chunks(header, entry.delta)
            outside_bases.add(entry.delta_base)
        crc = 0
        for chunk in chunks:
            crc = emit(chunk, crc)
        offsets[entry.sha] = start
        index_entries.append((hex_to_sha(entry.sha), start, crc))
    if len(index_entries) != object_count:
        raise ValueError(f"pack header promised {object_count} objects, got {len(index_entries)}")
    checksum = pack_hash.digest()
    out.write(checksum)
    return WrittenPack(checksum, index_entries)


def whole_entry_chunks(type_num: int, raw: bytes) -> Iterator[bytes]:
    """The bytes of a pack entry holding the object whole: its header, then its deflated content."""
    return _entry_chunks(pack_object_header(type_num, None, len(raw), SHA1), raw)


def _entry_chunks(header: bytearray, payload: bytes) -> Iterator[bytes]:
    compressor = zlib.compressobj(_compression_level(payload))
    yield bytes(header)
    yield compressor.compress(payload)
    yield compressor.flush()


def _compression_level(payload: bytes) -> int:
    if len(payload) < 2 * _INCOMPRESSIBLE_PROBE:
        return _COMPRESSION_LEVEL
    sample = payload[:_INCOMPRESSIBLE_PROBE]
    if len(zlib.compress(sample, 1)) > _INCOMPRESSIBLE_RATIO * len(sample):
        return 0
    return _COMPRESSION_LEVEL


def _check_placement(entry: PackEntry, offsets: dict[bytes, int], outside_bases: set[bytes]) -> None:
    """Refuse an entry that would give the pack a duplicate or a delta chain that can loop."""
    name = entry.sha.decode("ascii", "replace")
    if entry.sha in offsets:
        raise ValueError(f"PackEntry {name} is written twice")
    if entry.sha in outside_bases:
        raise ValueError(f"PackEntry {name} comes after a REF_DELTA that treats it as outside the pack")
    if _is_delta(entry) and entry.delta_base == entry.sha:
        raise ValueError(f"PackEntry {name} is a delta against itself")


def add_entries_to_store(object_store: DiskObjectStore, entries: Iterable[PackEntry]) -> None:
    """Write entries into the store as one self-contained pack and index, crash-safely."""
    entries = _self_contained(_unique(entries))
    if not entries:
        return
    pack_dir = object_store.pack_dir
    os.makedirs(pack_dir, exist_ok=True)
    remove_stale_leftovers(pack_dir)
    pack_fd, pack_tmp = tempfile.mkstemp(dir=pack_dir, prefix="tmp_pack_")
    index_tmp = None
    try:
        with os.fdopen(pack_fd, "wb") as pack_file:
            written = write_pack(pack_file, entries, len(entries))
        index_fd, index_tmp = tempfile.mkstemp(dir=pack_dir, prefix="tmp_idx_")
        with os.fdopen(index_fd, "wb") as index_file:
            write_pack_index_v2(index_file, sorted(written.index_entries), written.checksum)
        install_pack(pack_tmp, index_tmp, pack_dir, "pack-" + written.checksum.hex())
    finally:
        for leftover in (pack_tmp, index_tmp):
            if leftover is not None:
                _remove_if_present(leftover)
    object_store.packs  # noqa: B018 -- the property rescans the pack directory, so lookups see the new pack


def install_pack(pack_path: str, index_path: str, pack_dir: str, basename: str) -> None:
    """Move a finished pack and its index into pack_dir as basename.pack/.idx, crash-safely.

    Both files are fsynced first; the pack is renamed in before the index, each rename made durable,
    so readers (which look for the index) never see a partial pack. The sources are consumed.
    """
    target = os.path.join(pack_dir, basename)
    if os.path.exists(target + ".idx"):
        _remove_if_present(pack_path)
        _remove_if_present(index_path)
        return  # the same pack is already installed
    for path in (pack_path, index_path):
        with open(path, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(path, 0o444)
    os.replace(pack_path, target + ".pack")
    fsync_directory(pack_dir)
    os.replace(index_path, target + ".idx")
    fsync_directory(pack_dir)


def remove_stale_leftovers(pack_dir: str | os.PathLike[str]) -> None:
    """Delete what a writer killed mid-way left in pack_dir: temporary files and packs without an index.

    Only files older than STALE_AFTER_SECONDS go: a younger one may belong to a git command the
    user is running in the folder right now (git also renames its pack in before its index).
    """
    try:
        names = set(os.listdir(pack_dir))
    except FileNotFoundError:
        return
    cutoff = time.time() - STALE_AFTER_SECONDS
    for name in names:
        unindexed_pack = name.endswith(".pack") and name[: -len(".pack")] + ".idx" not in names
        if unindexed_pack or name.startswith(("tmp_pack_", "tmp_idx_")):
            path = os.path.join(pack_dir, name)
            with suppress(FileNotFoundError):
                if os.stat(path).st_mtime < cutoff:
                    os.remove(path)


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make renames inside a directory durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_if_present(path: str) -> None:
    with suppress(FileNotFoundError):
        os.remove(path)


def _is_delta(entry: PackEntry) -> bool:
    """Whether the entry is written as a delta: git refuses deltas shorter than 4 bytes (an empty result)."""
    return entry.delta is not None and len(entry.delta) >= _GIT_MIN_DELTA_SIZE


def _unique(entries: Iterable[PackEntry]) -> list[PackEntry]:
    seen: set[bytes] = set()
    unique = []
    for entry in entries:
        if entry.sha not in seen:
            seen.add(entry.sha)
            unique.append(entry)
    return unique


def _self_contained(entries: list[PackEntry]) -> list[PackEntry]:
    """Check every entry; store whole each delta whose base is not earlier in the pack or is too deep."""
    depth: dict[bytes, int] = {}
    raw_by_sha: dict[bytes, bytes] = {}
    result = []
    for entry in entries:
        if object_id(entry.type_num, entry.raw) != entry.sha:
            raise ValueError(f"PackEntry {entry.sha.decode()} does not match its content")
        if _is_delta(entry):
            base_depth = depth.get(entry.delta_base)
            if base_depth is None or base_depth >= MAX_DELTA_DEPTH:
                entry = replace(entry, delta_base=None, delta=None)
            elif b"".join(apply_delta(raw_by_sha[entry.delta_base], entry.delta)) != entry.raw:
                raise ValueError(f"PackEntry {entry.sha.decode()}: its delta does not reproduce it")
        depth[entry.sha] = depth[entry.delta_base] + 1 if _is_delta(entry) else 0
        raw_by_sha[entry.sha] = entry.raw
        result.append(entry)
    return result
