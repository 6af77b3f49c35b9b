"""Partially received blobs on disk, so a transfer resumes after either side restarts.

A blob from peer P with SHA-256 H lives in the caller's directory as `P-H.part` (the data, at its
final offsets, sparse) and `P-H.bitmap` (a header naming size, SHA-256 and granularity, then one bit
per GRANULARITY-byte block that is fully on disk). `checkpoint()` fsyncs the data before it writes
and fsyncs the bits that record it, so after a crash every set bit stands for durable bytes; bits
only ever go from 0 to 1, so a torn bitmap write can only forget data, never invent it. Blocks only
partly received when the process stopped are received again.

Contiguous writes are gathered, without copying, into batches of up to BATCH_BYTES written by one
pwritev. The fsyncs run in a worker thread: an fsync takes milliseconds, and the caller is an event
loop serving every peer (writing and hashing stay in the caller's thread, where they cost less than
handing them to a thread that must win the GIL back after every call). `checkpoint()` writes the
gathered data out, takes the bitmap of what was written so far and queues the fsync of the data and
then the write and fsync of that bitmap. Data written meanwhile is not in the bitmap, so the invariant
holds whatever the worker has reached when the process dies; once a checkpoint fails, the file's later
checkpoints do not run (Linux reports a failed writeback once and may drop the pages, so a later fsync
could succeed over lost data). `wait_recorded()` (and `close`, `finish`) wait for the worker.

Bytes are written once: a range that is already present is never rewritten, and the SHA-256 is taken
of the bytes that went to the file, in order (reading back what arrived out of order), so it is the
hash of the file on disk. `finish()` checks it against the offer and renames the file to `P-H.blob`;
only then is it handed on.
"""

from __future__ import annotations

import hashlib
import os
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ocsync_tui.errors import OcsyncError
from ocsync_tui.net.ranges import RangeSet

GRANULARITY = 4096
_MAGIC = b"ocsp"
_FORMAT_VERSION = 1
_HEADER = struct.Struct("!4sBIQ32s")
# How much out-of-order data one write may read back to advance the running hash; the rest waits
# for later writes or finish(), so one call never stalls on a large re-read after a resume.
_HASH_CATCH_UP_STEP = 1 << 20
BATCH_BYTES = 1 << 20
_BATCH_BUFFERS = 512  # well under IOV_MAX (1024) for one pwritev
# One worker for every partial file of the process: fsyncs to one disk gain little from running side by side.
_recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocsync-checkpoint")


class PartialStoreError(OcsyncError):
    pass


class BlobVerificationError(OcsyncError):
    pass


def _set_blocks(bitmap: bytearray, first: int, end: int) -> None:
    while first < end and first % 8:
        bitmap[first // 8] |= 0x80 >> (first % 8)
        first += 1
    whole_end = end - end % 8
    if whole_end > first:
        bitmap[first // 8 : whole_end // 8] = b"\xff" * ((whole_end - first) // 8)
        first = whole_end
    while first < end:
        bitmap[first // 8] |= 0x80 >> (first % 8)
        first += 1


def _block_runs(bitmap: bytes, block_count: int) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    run_start = -1
    for index, value in enumerate(bitmap):
        if value in (0, 0xFF):
            blocks = [value == 0xFF] * 8
        else:
            blocks = [bool(value & (0x80 >> bit)) for bit in range(8)]
        for bit, present in enumerate(blocks):
            block = index * 8 + bit
            if block >= block_count:
                break
            if present and run_start < 0:
                run_start = block
            elif not present and run_start >= 0:
                runs.append((run_start, block))
                run_start = -1
    if run_start >= 0:
        runs.append((run_start, block_count))
    return runs


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record(data_fd: int, bitmap_fd: int, bitmap: bytes) -> None:
    """Make the data durable, then the bitmap that records it (run by the worker thread)."""
    os.fsync(data_fd)
    os.pwrite(bitmap_fd, bitmap, _HEADER.size)
    os.fsync(bitmap_fd)


def _write_all(fd: int, buffers: list[bytes | memoryview], offset: int) -> None:
    while buffers:
        written = os.pwritev(fd, buffers, offset)
        offset += written
        while buffers and written >= len(buffers[0]):
            written -= len(buffers.pop(0))
        if written:
            buffers[0] = memoryview(buffers[0])[written:]




class PartialStore:
    """The directory of partial and verified blobs, keyed by (peer id, SHA-256)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PartialStoreError(f"cannot create the transfer directory {directory}: {error.strerror}") from error

    def _path(self, peer: bytes, sha256: bytes, suffix: str) -> Path:
        return self.directory / f"{peer.hex()}-{sha256.hex()}{suffix}"

    def completed_path(self, peer: bytes, sha256: bytes) -> Path | None:
        """The verified blob, if it was finished and not yet removed."""
        path = self._path(peer, sha256, ".blob")
        return path if path.exists() else None

    def open(self, peer: bytes, sha256: bytes, size: int) -> PartialFile:
        """Resume the partial blob (or start an empty one); at most one PartialFile per key at a time."""
        return PartialFile(
            self._path(peer, sha256, ".part"),
            self._path(peer, sha256, ".bitmap"),
            self._path(peer, sha256, ".blob"),
            sha256,
            size,
        )

    def remove(self, peer: bytes, sha256: bytes) -> None:
        """Forget the blob: the verified file once consumed, or a partial nobody will finish."""
        for suffix in (".blob", ".part", ".bitmap"):
            self._path(peer, sha256, suffix).unlink(missing_ok=True)


class PartialFile:
    def __init__(self, data_path: Path, bitmap_path: Path, final_path: Path, sha256: bytes, size: int) -> None:
        self.data_path, self.bitmap_path, self.final_path = data_path, bitmap_path, final_path
        self.sha256 = sha256
        self.size = size
        self.have = RangeSet()
        self._block_count = -(-size // GRANULARITY)
        self._hasher = hashlib.sha256()
        self._hashed = 0  # where the hash stands once the gathered writes are flushed
        self._unrecorded = 0
        self._present = 0
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._pending_offset = 0
        self._pending_hash: list[bytes | memoryview] = []
        self._recording: Future[None] | None = None
        self._record_failure: BaseException | None = None
        self._data_fd = self._bitmap_fd = -1
        try:
            self._data_fd = os.open(data_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._bitmap_fd = os.open(bitmap_path, os.O_RDWR | os.O_CREAT, 0o600)
            if not self._load():
                self._reset()
        except OSError as error:
            self.close()
            raise PartialStoreError(f"cannot open the partial file {data_path}: {error.strerror}") from error

    def _header(self) -> bytes:
        return _HEADER.pack(_MAGIC, _FORMAT_VERSION, GRANULARITY, self.size, self.sha256)

    def _load(self) -> bool:
        expected = _HEADER.size + -(-self._block_count // 8)
        recorded = os.pread(self._bitmap_fd, expected + 1, 0)
        if len(recorded) != expected or recorded[: _HEADER.size] != self._header():
            return False
        if os.fstat(self._data_fd).st_size != self.size:
            return False
        for first, end in _block_runs(recorded[_HEADER.size :], self._block_count):
            self.have.add(first * GRANULARITY, min(end * GRANULARITY, self.size))
        # What is already on disk is hashed a step per write (and the rest by finish), so resuming a
        # large blob does not stall on reading it all back at once.
        self._present = self.have.total()
        return True

    def _reset(self) -> None:
        os.ftruncate(self._data_fd, 0)
        os.ftruncate(self._data_fd, self.size)
        os.ftruncate(self._bitmap_fd, 0)
        os.pwrite(self._bitmap_fd, self._header() + bytes(-(-self._block_count // 8)), 0)
        os.fsync(self._data_fd)
        os.fsync(self._bitmap_fd)
        _fsync_directory(self.data_path.parent)

    @property
    def bytes_present(self) -> int:
        return self._present

    @property
    def is_complete(self) -> bool:
        return self._present == self.size

    @property
    def unrecorded_bytes(self) -> int:
        """Bytes written since the last checkpoint: what a crash now would make us receive again."""
        return self._unrecorded

    def ready(self, now: float) -> bool:
        """Whether a write now would not block; a slower store (a writer thread, a test's slow disk)
        says no until it catches up, and the transfer core buffers and shrinks its receive window."""
        return True

    def write(self, offset: int, data: bytes | memoryview) -> int:
        """Store data at offset, skipping what is already present; return how many bytes were new.

        `data` must not change afterwards: it is gathered without a copy until the next flush."""
        end = offset + len(data)
        if end > self.size or offset < 0:
            raise PartialStoreError(f"data at {offset}..{end} lies beyond the blob's {self.size} bytes")
        have = self.have
        added = 0
        if offset >= have.last_end():
            added = have.add(offset, end)
            self._write_behind(offset, end, data)
        else:
            view = memoryview(data)
            for gap_start, gap_end in have.gaps(offset, end):
                added += have.add(gap_start, gap_end)
                self._write_behind(gap_start, gap_end, view[gap_start - offset : gap_end - offset])
        self._unrecorded += added
        self._present += added
        if added and self._hashed != have.first_end_from(self._hashed):
            self._catch_up_hash(_HASH_CATCH_UP_STEP)
        return added

    def _write_behind(self, offset: int, end: int, data: bytes | memoryview) -> None:
        """Gather contiguous writes (data mostly arrives in order) into few large pwritev calls; the
        pieces that continue the hashed prefix are hashed when they are written."""
        if self._pending and offset != self._pending_offset + self._pending_bytes:
            self._flush()
        if not self._pending:
            self._pending_offset = offset
        self._pending.append(data)
        self._pending_bytes += end - offset
        if offset == self._hashed:
            self._pending_hash.append(data)
            self._hashed = end
        if self._pending_bytes >= BATCH_BYTES or len(self._pending) >= _BATCH_BUFFERS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        buffers, hash_pieces = self._pending, self._pending_hash
        self._pending, self._pending_hash, self._pending_bytes = [], [], 0
        _write_all(self._data_fd, buffers, self._pending_offset)
        update = self._hasher.update
        for piece in hash_pieces:
            update(piece)

    def _catch_up_hash(self, limit: int) -> None:
        """Hash data already on disk that continues the hashed prefix, reading at most `limit` bytes."""
        target = min(self.have.first_end_from(self._hashed), self._hashed + limit)
        if target <= self._hashed:
            return
        self._flush()
        while self._hashed < target:
            block = os.pread(self._data_fd, min(target - self._hashed, 1 << 20), self._hashed)
            if not block:
                raise PartialStoreError(f"{self.data_path} is shorter than what was recorded in it")
            self._hasher.update(block)
            self._hashed += len(block)

    def checkpoint(self) -> None:
        """Start making everything written so far durable, data first, then the bits that record it.

        Returns before the fsyncs are done (they run in a worker thread). While the previous
        checkpoint still runs it does nothing (the caller asks again later: waiting would stall the
        event loop on the disk); raises OSError if the previous one failed.
        """
        if self._recording is not None and not self._recording.done():
            return
        self.wait_recorded()
        if not self._unrecorded:
            return
        self._flush()
        bitmap = bytearray(-(-self._block_count // 8))
        for start, end in self.have:
            first_block = -(-start // GRANULARITY)
            end_block = self._block_count if end == self.size else end // GRANULARITY
            if end_block > first_block:
                _set_blocks(bitmap, first_block, end_block)
        self._unrecorded = 0
        self._recording = _recorder.submit(_record, self._data_fd, self._bitmap_fd, bytes(bitmap))

    def wait_recorded(self) -> None:
        """Wait until the last checkpoint is on disk; raises OSError if it failed (its data is then
        simply received again after a restart), and again on every later call: once a checkpoint
        failed, none is taken any more."""
        recording, self._recording = self._recording, None
        if recording is not None:
            try:
                recording.result()
            except OSError as error:
                self._record_failure = error
        if self._record_failure is not None:
            raise self._record_failure

    def finish(self) -> Path:
        """Verify the whole against the offered SHA-256 and move it to its final name; return that path.

        Raises BlobVerificationError on a mismatch (the caller discards the partial: which bytes are
        wrong cannot be known) and PartialStoreError if data is missing.
        """
        if not self.is_complete:
            raise PartialStoreError(f"{self.data_path} is not complete ({self.bytes_present} of {self.size} bytes)")
        self._catch_up_hash(self.size)
        self._flush()
        self._settle()
        if self._hasher.digest() != self.sha256:
            raise BlobVerificationError(
                f"received data does not match SHA-256 {self.sha256.hex()[:16]}…; the transfer must start over"
            )
        os.fsync(self._data_fd)
        os.replace(self.data_path, self.final_path)
        self.close()
        self.bitmap_path.unlink(missing_ok=True)
        _fsync_directory(self.final_path.parent)
        return self.final_path

    def _settle(self) -> None:
        """Wait for the worker before the files change hands; a failed checkpoint only costs a resend."""
        try:
            self.wait_recorded()
        except OSError:
            pass

    def discard(self) -> None:
        self._pending, self._pending_hash, self._pending_bytes = [], [], 0
        self.close()
        self.data_path.unlink(missing_ok=True)
        self.bitmap_path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the files. Gathered data is written if possible; either way the bitmap does not
        record it, so a failure here costs a resend, never a wrong byte."""
        self._settle()
        if self._pending and self._data_fd >= 0:
            try:
                self._flush()
            except OSError:
                self._pending, self._pending_hash, self._pending_bytes = [], [], 0
        for name in ("_data_fd", "_bitmap_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
