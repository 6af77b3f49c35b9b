"""Reading objects out of one pack file with pread, a bounded cache of delta bases, and streams for
large objects.

dulwich reads a pack through an mmap, resolves a delta by walking its whole chain again on every read,
and returns every object whole. For the tens of thousands of tree versions a bundle of per-file commits
brings, each read one after another along the history, that walk is most of an import; and an mmap of a
pack of large files counts every page read in the process's resident size. Here a resolved object is
kept in a least-recently-used cache (bounded in bytes), so reading the next version of a tree applies
one delta; and a large object stored whole is inflated chunk by chunk into its reader's hands.

API (stable):

- ``PackReader(path, offsets, resolve_outside=None, entries_known=True)``: ``offsets`` maps each binary
  id to its entry's offset; ``resolve_outside(binary_id) -> (type_num, raw)`` serves REF_DELTA bases
  not in the pack (a thin pack; KeyError when it has none either). For a pack still being written,
  ``entries_known=False`` and ``add_entry(offset, end)`` as each entry lands, ``remember(offset,
  type_num, raw)`` to cache what the writer resolved. ``get_raw(binary_id)``, ``get_raw_at(offset)`` -> (type_num, raw), resolving deltas;
  ``stream(binary_id)`` -> (type_num, size, chunks). ``close()``. Raises ``PackReadError`` for an
  entry that does not decode; ``KeyError`` for an id the pack lacks.
- ``StoreObjects(store)``: ``chunks(hex_id)`` -> the content of an object of a dulwich store in pieces,
  an object stored whole in a pack streamed from the file; ``close()``.
- ``read_entry_header(head)`` -> (type_num, size, header_length, base): base is an OFS_DELTA's distance
  back, a REF_DELTA's binary base id, or None. Raises IndexError when `head` ends inside the header.
"""

import binascii
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator

from dulwich.object_format import SHA1
from dulwich.pack import OFS_DELTA, REF_DELTA, apply_delta, load_pack_index

from ocsync_tui.errors import OcsyncError

_SHA_LENGTH = 20
# A type-and-size varint (at most 10 bytes for a 64-bit size), then an offset varint (at most 10 bytes)
# or a 20-byte base id.
LONGEST_ENTRY_HEADER = 32
_READ_CHUNK = 1 << 20
_CACHE_BYTES = 32 << 20
# Objects larger than this are not kept whole in the cache (they are seldom delta bases of each other).
_CACHED_OBJECT_MAX = 1 << 20
_MAX_CHAIN = 10_000


class PackReadError(OcsyncError):
    """An entry of a pack does not decode: the message says which and why."""


def read_entry_header(head: bytes) -> tuple[int, int, int, int | bytes | None]:
    """(type, inflated size, header length, base) of the pack entry whose first bytes are `head`."""
    byte = head[0]
    type_num, size, shift, position = (byte >> 4) & 7, byte & 15, 4, 1
    while byte & 0x80:
        byte = head[position]
        size |= (byte & 0x7F) << shift
        shift += 7
        position += 1
    base: int | bytes | None = None
    if type_num == OFS_DELTA:
        byte = head[position]
        position += 1
        base = byte & 0x7F
        while byte & 0x80:
            byte = head[position]
            position += 1
            base = ((base + 1) << 7) | (byte & 0x7F)
    elif type_num == REF_DELTA:
        base = bytes(head[position : position + _SHA_LENGTH])
        if len(base) != _SHA_LENGTH:
            raise IndexError("the entry header ends inside its base id")
        position += _SHA_LENGTH
    return type_num, size, position, base


class _ObjectCache:
    """Resolved objects by offset, least recently used first out, up to a total size."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._size = 0
        self._objects: OrderedDict[int, tuple[int, bytes]] = OrderedDict()

    def get(self, offset: int) -> tuple[int, bytes] | None:
        found = self._objects.get(offset)
        if found is not None:
            self._objects.move_to_end(offset)
        return found

    def put(self, offset: int, type_num: int, raw: bytes) -> None:
        if len(raw) > _CACHED_OBJECT_MAX or offset in self._objects:
            return
        self._objects[offset] = (type_num, raw)
        self._size += len(raw)
        while self._size > self._capacity:
            _, (_, evicted) = self._objects.popitem(last=False)
            self._size -= len(evicted)


class PackReader:
    """Objects of the pack at `path`; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        offsets: dict[bytes, int],
        resolve_outside: Callable[[bytes], tuple[int, bytes]] | None = None,
        *,
        entries_known: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        self._offsets = offsets
        self._resolve_outside = resolve_outside
        self._cache = _ObjectCache(_CACHE_BYTES)
        self._end_of: dict[int, int] = {}
        if entries_known:
            ordered = sorted(offsets.values())
            self._end_of = dict(zip(ordered, ordered[1:] + [os.fstat(self._fd).st_size - _SHA_LENGTH]))

    def add_entry(self, offset: int, end: int) -> None:
        """Make the entry at [offset, end) readable: for a pack still being written (entries_known=False)."""
        self._end_of[offset] = end

    def remember(self, offset: int, type_num: int, raw: bytes) -> None:
        """Cache the resolved object at `offset` (the indexer has it in hand)."""
        self._cache.put(offset, type_num, raw)

    def outside(self, base: bytes) -> tuple[int, bytes]:
        """A REF_DELTA base from outside the pack; KeyError if there is none."""
        if self._resolve_outside is None:
            raise KeyError(base)
        return self._resolve_outside(base)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __contains__(self, sha: bytes) -> bool:
        return sha in self._offsets

    def offset_of(self, sha: bytes) -> int:
        return self._offsets[sha]

    def get_raw(self, sha: bytes) -> tuple[int, bytes]:
        return self.get_raw_at(self._offsets[sha])

    def get_raw_at(self, offset: int) -> tuple[int, bytes]:
        """The object at `offset`, its deltas applied: the chain is walked back to a cached or whole
        object, then applied forwards, each step cached."""
        chain: list[tuple[int, bytes]] = []  # (offset, delta) from the wanted object back
        current = offset
        while True:
            cached = self._cache.get(current)
            if cached is not None:
                type_num, raw = cached
                break
            type_num, _size, base, payload = self._read_entry(current)
            if base is None:
                raw = payload
                self._cache.put(current, type_num, raw)
                break
            chain.append((current, payload))
            if len(chain) > _MAX_CHAIN:
                raise PackReadError(f"{self.path}: a delta chain at offset {offset} is longer than {_MAX_CHAIN}")
            if isinstance(base, bytes):
                base_offset = self._offsets.get(base)
                if base_offset is None:
                    type_num, raw = self._outside_base(base, offset)
                    break
                current = base_offset
            else:
                current = base
        for delta_offset, delta in reversed(chain):
            try:
                raw = b"".join(apply_delta(raw, delta))
            except Exception as error:  # dulwich's ApplyDeltaError, or an assertion on a bad delta
                raise PackReadError(f"{self.path}: the delta at offset {delta_offset} does not apply ({error})") from error
            self._cache.put(delta_offset, type_num, raw)
        return type_num, raw

    def stream(self, sha: bytes) -> tuple[int, int, Iterator[bytes]]:
        """(type, size, chunks) of an object: inflated piece by piece when stored whole."""
        offset = self._offsets[sha]
        head = os.pread(self._fd, LONGEST_ENTRY_HEADER, offset)
        type_num, size, header_length, base = self._header(head, offset)
        if base is not None or size <= _READ_CHUNK:
            type_num, raw = self.get_raw_at(offset)
            return type_num, len(raw), iter([raw])
        return type_num, size, self._inflate_chunks(offset + header_length, self._end_of[offset], size, offset)

    def _outside_base(self, base: bytes, offset: int) -> tuple[int, bytes]:
        try:
            return self.outside(base)
        except KeyError:
            raise PackReadError(f"{self.path}: the delta at offset {offset} has a base the pack lacks") from None

    def _header(self, head: bytes, offset: int) -> tuple[int, int, int, int | bytes | None]:
        try:
            type_num, size, header_length, base = read_entry_header(head)
        except IndexError:
            raise PackReadError(f"{self.path}: the entry at offset {offset} has a truncated header") from None
        if type_num == OFS_DELTA:
            if not 0 < base <= offset:
                raise PackReadError(f"{self.path}: the delta at offset {offset} points outside the pack")
            base = offset - base
        elif type_num not in (1, 2, 3, 4, REF_DELTA):
            raise PackReadError(f"{self.path}: the entry at offset {offset} has unknown type {type_num}")
        return type_num, size, header_length, base

    def _read_entry(self, offset: int) -> tuple[int, int, int | bytes | None, bytes]:
        """(type, size, base offset or id, inflated payload) of the entry at `offset`."""
        end = self._end_of.get(offset)
        if end is None:
            raise PackReadError(f"{self.path}: no entry starts at offset {offset}")
        data = os.pread(self._fd, end - offset, offset)
        type_num, size, header_length, base = self._header(data[:LONGEST_ENTRY_HEADER], offset)
        payload = b"".join(self._inflate_chunks_of(data[header_length:], size, offset))
        return type_num, size, base, payload

    def _inflate_chunks(self, start: int, end: int, size: int, offset: int) -> Iterator[bytes]:
        return _inflate_from(self._fd, start, end, size, self.path, offset)

    def _inflate_chunks_of(self, data: bytes, size: int, offset: int) -> Iterator[bytes]:
        return _inflate(iter([data]), size, self.path, offset)


def _inflate_from(fd: int, start: int, end: int | None, size: int, path: str, offset: int) -> Iterator[bytes]:
    """The inflated payload of the entry whose deflated bytes start at `start` (and end at `end`, or
    wherever its zlib stream does), read with pread a chunk at a time."""

    def compressed() -> Iterator[bytes]:
        position = start
        # Without an end, first ask for about what the payload deflates to (stored: a little more).
        wanted = min(size + 64 + size // 1000, _READ_CHUNK)
        while end is None or position < end:
            chunk = os.pread(fd, wanted if end is None else min(_READ_CHUNK, end - position), position)
            if not chunk:
                return
            position += len(chunk)
            wanted = _READ_CHUNK
            yield chunk

    return _inflate(compressed(), size, path, offset)


def _inflate(compressed: Iterator[bytes], size: int, path: str, offset: int) -> Iterator[bytes]:
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for chunk in compressed:
            while chunk:
                out = inflater.decompress(chunk, _READ_CHUNK)
                produced += len(out)
                if produced > size:
                    break
                if out:
                    yield out
                chunk = inflater.unconsumed_tail
            if inflater.eof or produced > size:
                break
    except zlib.error as error:
        raise PackReadError(f"{path}: the entry at offset {offset} does not inflate ({error})") from None
    if not inflater.eof or produced != size:
        raise PackReadError(f"{path}: the entry at offset {offset} does not inflate to its size")


class StoreObjects:
    """Object contents from a dulwich object store, one stored whole in a pack read from the pack file
    with pread and streamed (so writing a 4 GB file out costs a megabyte of memory, not 4 GB, and no
    mmap of the pack counts every page read in the process's resident size); a delta through dulwich."""

    def __init__(self, store) -> None:
        self._store = store
        self._indexes: list[tuple[object, str]] | None = None
        self._fds: dict[str, int] = {}

    def chunks(self, sha: bytes) -> Iterator[bytes]:
        """The content of the object with hex id `sha`, in pieces."""
        for index, pack_path in self._pack_indexes():
            try:
                offset = index.object_offset(binascii.unhexlify(sha))
            except KeyError:
                continue
            fd = self._fds.get(pack_path)
            if fd is None:
                fd = self._fds[pack_path] = os.open(pack_path, os.O_RDONLY)
            try:
                type_num, size, header_length, base = read_entry_header(os.pread(fd, LONGEST_ENTRY_HEADER, offset))
            except IndexError:
                break  # dulwich reports the damage below
            if base is None:
                return _inflate_from(fd, offset + header_length, None, size, pack_path, offset)
            break
        return iter([self._store.get_raw(sha)[1]])

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        for index, _ in self._indexes or ():
            index.close()

    def _pack_indexes(self) -> list[tuple[object, str]]:
        if self._indexes is None:
            self._indexes = []
            pack_dir = getattr(self._store, "pack_dir", None)
            names = os.listdir(pack_dir) if pack_dir and os.path.isdir(pack_dir) else []
            for name in sorted(names):
                pack_path = os.path.join(pack_dir, name[: -len(".idx")] + ".pack")
                if name.endswith(".idx") and os.path.exists(pack_path):
                    self._indexes.append((load_pack_index(os.path.join(pack_dir, name), SHA1), pack_path))
        return self._indexes
