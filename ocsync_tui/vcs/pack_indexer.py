"""Indexing a received pack in one pass: each entry copied to the pack file, inflated once, its deltas
resolved against cached bases, hashed and parsed.

dulwich's importer reads the stream once to copy it, then every entry again to resolve and hash it, then
(for a thin pack) the whole file a third time for the new checksum, and holds every object whole while
it does. Here the stream is read once. A large object stored whole is inflated and hashed chunk by chunk
and never held; deltas are resolved as they arrive through a PackReader on the file being written (its
bases are mostly the objects just before, in its cache). A REF_DELTA whose base comes later in the pack
waits until the end of the pass.

API (stable):

- ``index_pack(read, pack_file, resolve_outside) -> IndexedPack``: ``read(n)`` returns up to n bytes of
  the pack stream (b"" at its end); ``pack_file`` is an unbuffered binary file opened for writing and
  reading (``open(path, "w+b", buffering=0)``) whose path PackReader may open; ``resolve_outside(
  binary_id) -> (type_num, raw)`` serves REF_DELTA bases not in the pack (KeyError if unknown). With
  ``in_place=True`` the stream is ``pack_file`` itself, read from its start, and nothing is written. Returns the
  index entries (binary id, offset, CRC-32), the pack checksum, the outside bases used and the
  ``ObjectLinks`` (ids the trees and commits name, each commit's tree and parents). The stream
  must end right after the pack. Raises ``PackIndexError`` for anything that is not a sound pack
  (truncated: ``TruncatedPack``), an object twice included; parsing errors of dulwich
  (ObjectFormatException) pass through.
"""

import binascii
import zlib
from collections.abc import Callable
from operator import itemgetter
from dataclasses import dataclass
from hashlib import sha1
from typing import BinaryIO

from dulwich.objects import S_ISGITLINK, Blob, Commit, ShaFile, Tree, object_header, parse_tree
from dulwich.pack import OFS_DELTA, REF_DELTA, apply_delta

from ocsync_tui.errors import OcsyncError
from ocsync_tui.vcs.incoming_trees import commit_links
from ocsync_tui.vcs.pack_reader import LONGEST_ENTRY_HEADER, PackReader, read_entry_header

_SHA_LENGTH = 20
_BLOCK = 1 << 20
# Objects stored whole and larger than this are hashed as they inflate, never held whole.
_STREAMED_ABOVE = 1 << 20
_OBJECT_TYPES = (1, 2, 3, 4)
# Where a tree has a submodule (mode 160000) entry, its raw bytes hold this; most trees have none.
_SUBMODULE_ENTRY = b"160000 "


class PackIndexError(OcsyncError):
    """The stream is not a sound pack: the message says why."""


class TruncatedPack(PackIndexError):
    pass


class ObjectLinks:
    """What the pack's trees and commits point at, gathered as each is parsed: checking that a bundle
    is complete then reads no object again."""

    def __init__(self) -> None:
        self.referenced: set[bytes] = set()  # hex ids the trees (submodule entries aside) and commits name
        # hex commit id -> (tree, parents), or None for a commit not in the shape git writes
        self.commits: dict[bytes, tuple[bytes, list[bytes]] | None] = {}

    def checked_id(self, type_num: int, raw: bytes) -> bytes:
        """The binary id of the object, after parsing it as dulwich would (a tree with a garbage mode, a
        commit without its headers, are refused here) and noting what it points at."""
        hasher = sha1(object_header(type_num, len(raw)))
        hasher.update(raw)
        if type_num == Tree.type_num:
            entries = parse_tree(raw, _SHA_LENGTH)
            if _SUBMODULE_ENTRY in raw:
                self.referenced.update(sha for _name, mode, sha in entries if not S_ISGITLINK(mode))
            else:
                self.referenced.update(map(itemgetter(2), entries))
        elif type_num != Blob.type_num:
            ShaFile.from_raw_chunks(type_num, [raw])
            if type_num == Commit.type_num:
                links = commit_links(raw)
                self.commits[hasher.hexdigest().encode("ascii")] = links
                if links is not None:
                    self.referenced.add(links[0])
        return hasher.digest()


@dataclass
class IndexedPack:
    entries: list[tuple[bytes, int, int]]  # (binary id, offset, CRC-32) in pack order
    checksum: bytes
    outside_bases: set[bytes]
    links: ObjectLinks


class _Input:
    """The pack stream with a read buffer; entries are fed to zlib from it without copying."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._buffer = b""
        self._position = 0

    def available(self, wanted: int) -> memoryview:
        """Up to `wanted` bytes (at least one) from the current position, not consumed yet."""
        if self._position == len(self._buffer):
            self._buffer, self._position = self._read(max(wanted, _BLOCK)), 0
            if not self._buffer:
                raise TruncatedPack("the pack ends early")
        return memoryview(self._buffer)[self._position : self._position + wanted]

    def peek(self, count: int) -> bytes:
        """Up to `count` bytes from the current position (fewer only at the end of the stream)."""
        if len(self._buffer) - self._position < count:
            self._buffer = self._buffer[self._position :] + self._read(max(count, _BLOCK))
            self._position = 0
        return self._buffer[self._position : self._position + count]

    def take(self, count: int) -> bytes:
        data = self.peek(count)
        if len(data) < count:
            raise TruncatedPack("the pack ends early")
        self._position += count
        return data

    def advance(self, count: int) -> None:
        self._position += count

    def at_end(self) -> bool:
        return not self.peek(1)


class _Output:
    """The pack file being written, with the running pack checksum and the entry's CRC-32."""

    def __init__(self, pack_file: BinaryIO | None) -> None:
        self._file = pack_file  # None: the pack is read where it lies, nothing is written
        self.hash = sha1()
        self.position = 0
        self.crc = 0

    def write(self, data: bytes | memoryview) -> None:
        if self._file is not None:
            self._file.write(data)
        self.hash.update(data)
        self.crc = binascii.crc32(data, self.crc)
        self.position += len(data)


def index_pack(
    read: Callable[[int], bytes],
    pack_file: BinaryIO,
    resolve_outside: Callable[[bytes], tuple[int, bytes]],
    *,
    in_place: bool = False,
) -> IndexedPack:
    """Copy, check, resolve and index the pack stream; see the module docstring."""
    stream, output = _Input(read), _Output(None if in_place else pack_file)
    header = stream.take(12)
    if header[:4] != b"PACK" or int.from_bytes(header[4:8], "big") not in (2, 3):
        raise PackIndexError("it does not start with a version 2 or 3 pack header")
    count = int.from_bytes(header[8:12], "big")
    output.write(header)
    offsets: dict[bytes, int] = {}
    outside_bases: set[bytes] = set()

    def outside(base: bytes) -> tuple[int, bytes]:
        found = resolve_outside(base)
        outside_bases.add(base)
        return found

    reader = PackReader(pack_file.name, offsets.get, outside)
    links = ObjectLinks()
    try:
        entries, waiting = _read_entries(stream, output, reader, offsets, count, links)
        checksum = output.hash.digest()
        if stream.take(_SHA_LENGTH) != checksum:
            raise PackIndexError("its checksum does not match its content")
        if not stream.at_end():
            raise PackIndexError("data follows the pack")
        if not in_place:
            pack_file.write(checksum)
        entries += _resolve_waiting(waiting, reader, offsets, links)
    finally:
        reader.close()
    return IndexedPack(entries, checksum, outside_bases, links)


def _read_entries(
    stream: _Input, output: _Output, reader: PackReader, offsets: dict[bytes, int], count: int, links: ObjectLinks
):
    entries: list[tuple[bytes, int, int]] = []
    waiting: list[tuple[int, int, bytes]] = []  # REF_DELTAs whose base is not known yet: (offset, crc, base)
    for _ in range(count):
        offset = output.position
        output.crc = 0
        head = stream.peek(LONGEST_ENTRY_HEADER)
        try:
            type_num, size, header_length, base = read_entry_header(head)
        except IndexError:
            raise TruncatedPack("the pack ends inside an entry header") from None
        if type_num not in _OBJECT_TYPES and type_num not in (OFS_DELTA, REF_DELTA):
            raise PackIndexError(f"the entry at offset {offset} has unknown type {type_num}")
        if type_num == OFS_DELTA and not 0 < base <= offset - 12:
            raise PackIndexError(f"the delta at offset {offset} points outside the pack")
        output.write(stream.take(header_length))
        if type_num in _OBJECT_TYPES and size > _STREAMED_ABOVE:
            hasher = sha1(object_header(type_num, size))
            _inflate(stream, output, size, offset, hasher.update)
            sha = hasher.digest()
            if type_num != Blob.type_num:
                links.checked_id(type_num, reader.get_raw_at(offset)[1])
        else:
            pieces: list[bytes] = []
            _inflate(stream, output, size, offset, pieces.append)
            payload = b"".join(pieces)
            if type_num == REF_DELTA and base not in offsets:
                try:
                    base_type, base_raw = reader.outside(base)
                except KeyError:
                    waiting.append((offset, output.crc, base))
                    continue
                type_num, raw = base_type, _applied(base_raw, payload, offset)
                reader.remember(offset, type_num, raw)
            elif type_num in (OFS_DELTA, REF_DELTA):
                base_offset = offset - base if type_num == OFS_DELTA else offsets[base]
                type_num, base_raw = reader.get_raw_at(base_offset)
                raw = _applied(base_raw, payload, offset)
                reader.remember(offset, type_num, raw)
            else:
                raw = payload
                reader.remember(offset, type_num, raw)
            sha = links.checked_id(type_num, raw)
        _record(sha, offset, offsets)
        entries.append((sha, offset, output.crc))
    return entries, waiting


def _resolve_waiting(waiting, reader: PackReader, offsets: dict[bytes, int], links: ObjectLinks) -> list[tuple[bytes, int, int]]:
    """Resolve the REF_DELTAs whose base came later in the pack (each round may make more bases known)."""
    resolved = []
    while waiting:
        still_waiting = [item for item in waiting if item[2] not in offsets]
        ready = [item for item in waiting if item[2] in offsets]
        if not ready:
            raise PackIndexError(f"{len(waiting)} delta(s) have a base neither the pack nor this folder has")
        for offset, crc, _base in ready:
            type_num, raw = reader.get_raw_at(offset)
            sha = links.checked_id(type_num, raw)
            _record(sha, offset, offsets)
            resolved.append((sha, offset, crc))
        waiting = still_waiting
    return resolved


def _record(sha: bytes, offset: int, offsets: dict[bytes, int]) -> None:
    if sha in offsets:
        raise PackIndexError(f"object {sha.hex()} is in the pack twice")
    offsets[sha] = offset


def _applied(base: bytes, delta: bytes, offset: int) -> bytes:
    try:
        return b"".join(apply_delta(base, delta))
    except Exception as error:  # dulwich's ApplyDeltaError, or an assertion on a malformed delta
        raise PackIndexError(f"the delta at offset {offset} does not apply ({error})") from error


def _inflate(stream: _Input, output: _Output, size: int, offset: int, sink: Callable[[bytes], object]) -> None:
    """Inflate one entry's payload from the stream into `sink`, copying its compressed bytes to output."""
    inflater = zlib.decompressobj()
    produced = 0
    # Most payloads deflate to less than their size (stored ones to a little more): offering about that
    # much keeps zlib from copying a whole read buffer into unused_data for every small object.
    offer = size + 64 + size // 1000
    while not inflater.eof:
        view = stream.available(min(offer, _BLOCK))
        try:
            # Bounded output: a small entry that inflates without end is cut off after one byte too many.
            out = inflater.decompress(view, min(size - produced + 1, _BLOCK))
        except zlib.error as error:
            raise PackIndexError(f"the entry at offset {offset} does not inflate ({error})") from None
        produced += len(out)
        if produced > size:
            raise PackIndexError(f"the entry at offset {offset} inflates to more than its size")
        consumed = len(view) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
        output.write(view[:consumed])
        stream.advance(consumed)
        if out:
            sink(out)
        offer = _BLOCK
    if produced != size:
        raise PackIndexError(f"the entry at offset {offset} inflates to {produced} bytes, not {size}")
