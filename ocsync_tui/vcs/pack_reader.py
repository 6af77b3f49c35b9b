"""Reading objects out of one pack file with pread, a bounded cache of delta bases, and streams for
large objects.

dulwich reads a pack through an mmap, resolves a delta by walking its whole chain again on every read,
and returns every object whole. For the tens of thousands of tree versions a bundle of per-file commits
brings, each read one after another along the history, that walk is most of an import; and an mmap of a
pack of large files counts every page read in the process's resident size. Here a resolved object is
kept in a least-recently-used cache (bounded in bytes), so reading the next version of a tree applies
one delta; and a large object stored whole is inflated chunk by chunk into its reader's hands.

API (stable):

- ``PackReader(path, locate, resolve_outside=None)``: ``locate(binary_id)`` gives the offset of an
  object's entry in the pack, or None; ``resolve_outside(binary_id) -> (type_num, raw)`` serves
  REF_DELTA bases not in the pack (a thin pack; KeyError when it has none either). ``get_raw(binary_id)``,
  ``get_raw_at(offset)`` -> (type_num, raw), resolving deltas; ``remember(offset, type_num, raw)``
  caches what a writer of the pack resolved itself (entries are read up to the end of their zlib
  stream, so a pack still being written can be read). ``close()``. Raises ``PackReadError`` for an
  entry that does not decode; ``KeyError`` for an id the pack lacks.
- ``PreadObjectStore``: a dulwich DiskObjectStore reading packed objects through PackReaders (one
  shared cache); ``chunks(hex_id)`` -> an object's content in pieces, streamed when stored whole;
  ``know_pack(path, offsets)`` for a pack whose entries' offsets the caller has.
- ``object_chunks(store, hex_id)``: the same for any store (whole where it cannot stream).
- ``ObjectCache(capacity)``: a cache PackReaders may share; ``stream_whole(offset)`` on a PackReader.
- ``read_entry_header(head)`` -> (type_num, size, header_length, base): base is an OFS_DELTA's distance
  back, a REF_DELTA's binary base id, or None. Raises IndexError when `head` ends inside the header.
"""

import binascii
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator

from dulwich.object_store import DiskObjectStore
from dulwich.pack import OFS_DELTA, REF_DELTA, apply_delta

from ocsync_tui.errors import OcsyncError

_SHA_LENGTH = 20
# A type-and-size varint (at most 10 bytes for a 64-bit size), then an offset varint (at most 10 bytes)
# or a 20-byte base id.
LONGEST_ENTRY_HEADER = 32
_READ_CHUNK = 1 << 20
_CACHE_BYTES = 16 << 20
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


class ObjectCache:
    """Resolved objects by (pack, offset), least recently used first out, up to a total size."""

    def __init__(self, capacity: int = _CACHE_BYTES) -> None:
        self._capacity = capacity
        self._size = 0
        self._objects: OrderedDict[tuple[str, int], tuple[int, bytes]] = OrderedDict()

    def get(self, key: tuple[str, int]) -> tuple[int, bytes] | None:
        found = self._objects.get(key)
        if found is not None:
            self._objects.move_to_end(key)
        return found

    def put(self, key: tuple[str, int], type_num: int, raw: bytes) -> None:
        if len(raw) > _CACHED_OBJECT_MAX or key in self._objects:
            return
        self._objects[key] = (type_num, raw)
        self._size += len(raw)
        while self._size > self._capacity:
            _, (_, evicted) = self._objects.popitem(last=False)
            self._size -= len(evicted)


class PackReader:
    """Objects of the pack at `path`; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        locate: Callable[[bytes], int | None],
        resolve_outside: Callable[[bytes], tuple[int, bytes]] | None = None,
        cache: "ObjectCache | None" = None,
    ) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        self._locate = locate
        self._resolve_outside = resolve_outside
        self._cache = cache if cache is not None else ObjectCache()

    def remember(self, offset: int, type_num: int, raw: bytes) -> None:
        """Cache the resolved object at `offset` (the indexer has it in hand)."""
        self._cache.put((self.path, offset), type_num, raw)

    def outside(self, base: bytes) -> tuple[int, bytes]:
        """A REF_DELTA base from outside the pack; KeyError if there is none."""
        if self._resolve_outside is None:
            raise KeyError(base)
        return self._resolve_outside(base)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def get_raw(self, sha: bytes) -> tuple[int, bytes]:
        offset = self._locate(sha)
        if offset is None:
            raise KeyError(sha)
        return self.get_raw_at(offset)

    def get_raw_at(self, offset: int) -> tuple[int, bytes]:
        """The object at `offset`, its deltas applied: the chain is walked back to a cached or whole
        object, then applied forwards, each step cached."""
        chain: list[tuple[int, bytes]] = []  # (offset, delta) from the wanted object back
        current = offset
        while True:
            cached = self._cache.get((self.path, current))
            if cached is not None:
                type_num, raw = cached
                break
            type_num, base, payload = self._read_entry(current)
            if base is None:
                raw = payload
                self._cache.put((self.path, current), type_num, raw)
                break
            chain.append((current, payload))
            if len(chain) > _MAX_CHAIN:
                raise PackReadError(f"{self.path}: a delta chain at offset {offset} is longer than {_MAX_CHAIN}")
            if isinstance(base, bytes):
                base_offset = self._locate(base)
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
            self._cache.put((self.path, delta_offset), type_num, raw)
        return type_num, raw

    def stream_whole(self, offset: int) -> Iterator[bytes] | None:
        """The inflated pieces of the entry at `offset` if it holds an object whole; None for a delta."""
        try:
            _type_num, size, header_length, base = read_entry_header(os.pread(self._fd, LONGEST_ENTRY_HEADER, offset))
        except IndexError:
            raise PackReadError(f"{self.path}: the entry at offset {offset} has a truncated header") from None
        if base is not None:
            return None
        return _inflate_from(self._fd, offset + header_length, None, size, self.path, offset)

    def _outside_base(self, base: bytes, offset: int) -> tuple[int, bytes]:
        try:
            return self.outside(base)
        except KeyError:
            raise PackReadError(f"{self.path}: the delta at offset {offset} has a base the pack lacks") from None

    def _read_entry(self, offset: int) -> tuple[int, int | bytes | None, bytes]:
        """(type, base offset or id, inflated payload) of the entry at `offset`."""
        try:
            type_num, size, header_length, base = read_entry_header(os.pread(self._fd, LONGEST_ENTRY_HEADER, offset))
        except IndexError:
            raise PackReadError(f"{self.path}: the entry at offset {offset} has a truncated header") from None
        if type_num == OFS_DELTA:
            if not 0 < base <= offset:
                raise PackReadError(f"{self.path}: the delta at offset {offset} points outside the pack")
            base = offset - base
        elif type_num not in (1, 2, 3, 4, REF_DELTA):
            raise PackReadError(f"{self.path}: the entry at offset {offset} has unknown type {type_num}")
        payload = b"".join(_inflate_from(self._fd, offset + header_length, None, size, self.path, offset))
        return type_num, base, payload


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


def _packed_location(store: DiskObjectStore, binary: bytes):
    """(pack, offset) of an object in one of the store's packs, or None. Through dulwich's own lookup:
    the packs it has open first, the pack directory listed again only on a miss (`store.packs` lists
    it on every call)."""
    try:
        return store._lookup_in_packs(lambda pack: (pack, pack.index.object_offset(binary)))
    except KeyError:
        return None


class PreadObjectStore(DiskObjectStore):
    """A DiskObjectStore whose packed objects are read with pread through PackReaders sharing one cache
    of resolved objects, instead of through dulwich's mmap of each pack: reading the trees of a head
    in a 550 MB pack then costs the trees, not the 150 MB of pages the kernel maps around each read."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._readers: dict[str, PackReader] = {}
        self._cache = ObjectCache()
        self._known_offsets: dict[bytes, int] = {}
        self._known_reader: PackReader | None = None

    def know_pack(self, pack_path: str, offsets: dict[bytes, int]) -> None:
        """The offsets of every entry of one of the store's packs, which the caller has at hand (it just
        indexed the pack): a lookup there costs a dict, not a search of the pack index in Python."""
        self._known_offsets = offsets
        self._known_reader = PackReader(pack_path, offsets.get, cache=self._cache)

    def get_raw(self, name: bytes) -> tuple[int, bytes]:
        if len(name) not in (20, 40):
            return super().get_raw(name)
        binary = name if len(name) == 20 else binascii.unhexlify(name)
        offset = self._known_offsets.get(binary)
        if offset is not None:
            return self._known_reader.get_raw_at(offset)
        located = _packed_location(self, binary)
        if located is None:
            return super().get_raw(name)  # loose, or in an alternate
        pack, offset = located
        return self._reader(pack).get_raw_at(offset)

    def chunks(self, sha: bytes) -> Iterator[bytes]:
        """The content of the object with hex id `sha` in pieces: streamed from its pack when stored
        whole there (so writing a 4 GB file out costs a megabyte of memory, not 4 GB)."""
        located = _packed_location(self, binascii.unhexlify(sha))
        if located is not None:
            pack, offset = located
            reader = self._reader(pack)
            streamed = reader.stream_whole(offset)
            if streamed is not None:
                return streamed
        return iter([self.get_raw(sha)[1]])

    def _reader(self, pack) -> PackReader:
        path = os.fspath(pack.data.path)
        reader = self._readers.get(path)
        if reader is None:
            index = pack.index

            def locate(sha: bytes) -> int | None:
                try:
                    return index.object_offset(sha)
                except KeyError:
                    return None

            reader = self._readers[path] = PackReader(path, locate, cache=self._cache)
        return reader

    def close(self) -> None:
        for reader in [*self._readers.values(), *filter(None, [self._known_reader])]:
            reader.close()
        self._readers.clear()
        super().close()


def object_chunks(store, sha: bytes) -> Iterator[bytes]:
    """The content of the object with hex id `sha` in pieces: streamed where the store can (a
    PreadObjectStore), read whole from any other store."""
    if isinstance(store, PreadObjectStore):
        return store.chunks(sha)
    return iter([store.get_raw(sha)[1]])
