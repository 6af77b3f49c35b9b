"""Copying a store's pack entries into a new pack as they lie on disk, without inflating them.

A first sync sends a peer every object the folder has. Inflating each object, searching a delta for it
and deflating it again (what the thin-bundle planner does for the few objects of a change) would be
most of the time of that sync, and would hold whole files in memory. git copies the entries of its
packs instead ("pack reuse"), and so does this module: each entry is read with pread in bounded chunks
(no mmap, so a large pack never inflates the process's resident size), checked against the CRC-32 its
pack index records, and written with only its header changed where a delta's base now lies at another
distance. An entry that cannot be copied (a delta whose base is not written yet) is written whole.

API (stable):

- ``write_all_objects(store, out, get_raw) -> WrittenObjects``: write a v2 pack of every object in the
  store's packs (once each, oldest pack first, each pack in its own order) to the binary file ``out``;
  returns how many objects, and how many of them commits, it holds. ``get_raw(hex_sha) -> (type_num,
  bytes)`` serves the objects written whole. A damaged entry (its CRC-32 differs from the index's) raises ``StoredEntryError``.
"""

import binascii
import os
from dataclasses import dataclass
from hashlib import sha1
from typing import BinaryIO, Callable

from dulwich.object_format import SHA1
from dulwich.pack import OFS_DELTA, load_pack_index, pack_header_chunks, pack_object_header

from ocsync_tui.errors import OcsyncError
from ocsync_tui.vcs.pack import whole_entry_chunks
from ocsync_tui.vcs.pack_reader import LONGEST_ENTRY_HEADER, read_entry_header

_CHUNK = 1 << 20
_COMMIT_TYPE = 1
_SHA_LENGTH = 20


class StoredEntryError(OcsyncError):
    """A pack in the store is damaged: the message names it and the entry."""


@dataclass(frozen=True, slots=True)
class _StorePack:
    path: str
    entries: list[tuple[int, bytes, int]]  # (offset, binary id, CRC-32), by offset
    data_end: int  # where the trailing checksum starts


def _store_packs(pack_dir: str) -> list[_StorePack]:
    """The store's packs with their entries, oldest first: a delta's base then comes before it."""
    try:
        names = os.listdir(pack_dir)
    except FileNotFoundError:
        return []
    packs = []
    for name in names:
        if not name.endswith(".idx") or name[: -len(".idx")] + ".pack" not in names:
            continue
        index_path = os.path.join(pack_dir, name)
        pack_path = index_path[: -len(".idx")] + ".pack"
        index = load_pack_index(index_path, SHA1)
        try:
            entries = sorted((offset, sha, crc) for sha, offset, crc in index.iterentries())
        finally:
            index.close()
        data_end = os.path.getsize(pack_path) - _SHA_LENGTH
        packs.append((os.stat(pack_path).st_mtime_ns, name, _StorePack(pack_path, entries, data_end)))
    return [pack for _, _, pack in sorted(packs)]


@dataclass(frozen=True, slots=True)
class WrittenObjects:
    objects: int
    commits: int


class _PackOutput:
    """Writes pack bytes to `out`, keeping the position and the pack's SHA-1."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.hash = sha1()
        self.position = 0

    def write(self, chunk: bytes) -> None:
        self._out.write(chunk)
        self.hash.update(chunk)
        self.position += len(chunk)


def write_all_objects(store, out: BinaryIO, get_raw: Callable[[bytes], tuple[int, bytes]]) -> WrittenObjects:
    """Write every object of the store's packs to `out` as one pack; see the module docstring."""
    packs = _store_packs(store.pack_dir)
    unique = set()
    for pack in packs:
        unique.update(sha for _, sha, _ in pack.entries)
    # git commands run in the folder write loose objects; they go whole, after the packs.
    loose = sorted(set(map(binascii.unhexlify, store._iter_loose_objects())) - unique)
    output = _PackOutput(out)
    for chunk in pack_header_chunks(len(unique) + len(loose)):
        output.write(chunk)
    written: dict[bytes, tuple[int, int]] = {}  # id -> (its offset in the new pack, its object type)
    for pack in packs:
        _copy_pack(pack, output, written, get_raw)
    for sha in loose:
        position = output.position
        written[sha] = (position, _write_whole(output, sha, get_raw))
    out.write(output.hash.digest())
    return WrittenObjects(len(written), sum(kind == _COMMIT_TYPE for _, kind in written.values()))


def _copy_pack(pack: _StorePack, output: _PackOutput, written: dict[bytes, tuple[int, int]], get_raw) -> None:
    """Append the pack's objects not written yet, noting each one's offset and type in `written`."""
    sha_at = {offset: sha for offset, sha, _ in pack.entries}
    ends = [offset for offset, _, _ in pack.entries[1:]] + [pack.data_end]
    fd = os.open(pack.path, os.O_RDONLY)
    try:
        for (offset, sha, crc), end in zip(pack.entries, ends):
            if sha in written:
                continue
            start = output.position
            head = os.pread(fd, min(LONGEST_ENTRY_HEADER, end - offset), offset)
            try:
                type_num, size, header_length, base = read_entry_header(head)
            except IndexError:
                raise _damaged(pack.path, offset) from None
            base_sha = sha_at.get(offset - base) if type_num == OFS_DELTA else base
            if type_num == OFS_DELTA and base_sha is None:
                raise _damaged(pack.path, offset)
            if base_sha is not None and base_sha not in written:
                type_num = _write_whole(output, sha, get_raw)  # its base comes later, or not at all
            else:
                if base_sha is None:
                    header = head[:header_length]
                else:
                    base_position, type_num = written[base_sha]  # a delta is of its base's type
                    header = bytes(pack_object_header(OFS_DELTA, start - base_position, size, SHA1))
                _copy_entry(fd, pack.path, offset, end, header_length, head, crc, header, output)
            written[sha] = (start, type_num)
    finally:
        os.close(fd)


def _copy_entry(fd: int, path: str, offset: int, end: int, header_length: int, head: bytes, crc: int,
                header: bytes, output: _PackOutput) -> None:
    """Copy the compressed payload of the entry at [offset, end) after `header`, checking its CRC-32."""
    computed = binascii.crc32(head[:header_length])
    output.write(header)
    position = offset + header_length
    while position < end:
        chunk = os.pread(fd, min(_CHUNK, end - position), position)
        if not chunk:
            break
        computed = binascii.crc32(chunk, computed)
        output.write(chunk)
        position += len(chunk)
    if position != end or computed != crc:
        raise _damaged(path, offset)


def _damaged(path: str, offset: int) -> StoredEntryError:
    return StoredEntryError(
        f"{path}: the entry at offset {offset} does not match its index (CRC-32); run git fsck in the folder"
    )


def _write_whole(output: _PackOutput, sha: bytes, get_raw) -> int:
    """Write the object whole, deflated anew; returns its type."""
    type_num, raw = get_raw(binascii.hexlify(sha))
    for chunk in whole_entry_chunks(type_num, raw):
        output.write(chunk)
    return type_num
