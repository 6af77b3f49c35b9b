"""Partial files: durable order (data before the bits that record it), resume, verification, cleanup."""

import hashlib
import os
import random
import threading

import pytest

from ocsync_tui.net.partial_store import (
    GRANULARITY,
    BlobVerificationError,
    PartialStore,
    PartialStoreError,
)

PEER = bytes(range(32))


def blob(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def test_out_of_order_pieces_assemble_and_verify(tmp_path):
    data = blob(5 * GRANULARITY + 123)
    store = PartialStore(tmp_path)
    partial = store.open(PEER, hashlib.sha256(data).digest(), len(data))
    pieces = [(offset, data[offset : offset + 1000]) for offset in range(0, len(data), 1000)]
    random.Random(2).shuffle(pieces)
    for offset, piece in pieces:
        partial.write(offset, piece)
    assert partial.is_complete
    path = partial.finish()
    assert path.read_bytes() == data
    assert store.completed_path(PEER, hashlib.sha256(data).digest()) == path
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".blob"]


def test_resume_keeps_only_checkpointed_whole_blocks(tmp_path):
    data = blob(10 * GRANULARITY)
    sha = hashlib.sha256(data).digest()
    partial = PartialStore(tmp_path).open(PEER, sha, len(data))
    partial.write(0, data[: 3 * GRANULARITY + 100])  # blocks 0-2 whole, block 3 partly
    partial.write(6 * GRANULARITY, data[6 * GRANULARITY : 7 * GRANULARITY])
    partial.checkpoint()
    partial.write(8 * GRANULARITY, data[8 * GRANULARITY :])  # written, never recorded: a crash now
    partial.close()

    resumed = PartialStore(tmp_path).open(PEER, sha, len(data))
    assert list(resumed.have) == [(0, 3 * GRANULARITY), (6 * GRANULARITY, 7 * GRANULARITY)]
    for start, end in resumed.have.gaps(0, len(data)):
        resumed.write(start, data[start:end])
    assert resumed.finish().read_bytes() == data


def test_last_partial_block_counts_when_the_blob_ends_there(tmp_path):
    data = blob(2 * GRANULARITY + 10)
    sha = hashlib.sha256(data).digest()
    partial = PartialStore(tmp_path).open(PEER, sha, len(data))
    partial.write(2 * GRANULARITY, data[2 * GRANULARITY :])
    partial.checkpoint()
    partial.close()
    assert list(PartialStore(tmp_path).open(PEER, sha, len(data)).have) == [(2 * GRANULARITY, len(data))]


def test_data_is_fsynced_before_the_bitmap_that_records_it(tmp_path, monkeypatch):
    data = blob(3 * GRANULARITY)
    partial = PartialStore(tmp_path).open(PEER, hashlib.sha256(data).digest(), len(data))
    partial.write(0, data)
    log = []
    real_fsync, real_pwrite, real_pwritev = os.fsync, os.pwrite, os.pwritev
    names = {os.fstat(fd).st_ino: name for fd, name in ((partial._data_fd, "data"), (partial._bitmap_fd, "bitmap"))}

    def logged(operation, real):
        return lambda fd, *rest: (log.append((operation, names[os.fstat(fd).st_ino])), real(fd, *rest))[1]

    monkeypatch.setattr(os, "fsync", logged("fsync", real_fsync))
    monkeypatch.setattr(os, "pwrite", logged("write", real_pwrite))
    monkeypatch.setattr(os, "pwritev", logged("write", real_pwritev))
    partial.checkpoint()
    partial.wait_recorded()
    # The gathered writes go to the file first, then data is made durable, then its record.
    assert log == [("write", "data"), ("fsync", "data"), ("write", "bitmap"), ("fsync", "bitmap")]


def test_checkpoint_returns_before_the_fsync_and_records_nothing_until_data_is_durable(tmp_path, monkeypatch):
    data = blob(3 * GRANULARITY)
    sha = hashlib.sha256(data).digest()
    partial = PartialStore(tmp_path).open(PEER, sha, len(data))
    partial.write(0, data)
    disk_may_finish = threading.Event()
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (disk_may_finish.wait(10), real_fsync(fd)))
    partial.checkpoint()  # would hang here for 10 s if it fsynced in the caller's thread
    crashed_now = PartialStore(tmp_path).open(PEER, sha, len(data))
    assert not crashed_now.have, "nothing is recorded while the data's fsync is still running"
    crashed_now.close()
    disk_may_finish.set()
    partial.wait_recorded()
    assert list(PartialStore(tmp_path).open(PEER, sha, len(data)).have) == [(0, len(data))]


def test_present_bytes_are_never_rewritten_so_the_running_hash_is_the_file(tmp_path):
    data = blob(4 * GRANULARITY)
    partial = PartialStore(tmp_path).open(PEER, hashlib.sha256(data).digest(), len(data))
    partial.write(100, data[100:5000])
    garbage = bytes(6000)  # overlaps what is there: only the missing bytes may be taken from it
    assert partial.write(0, garbage) == 100 + 1000
    assert partial.write(0, data[:100]) == 0
    assert partial.write(5000, data[5000:6000]) == 0
    partial.write(6000, data[6000:])
    partial.wait_recorded()
    on_disk = partial.data_path.read_bytes()
    assert on_disk[:100] == bytes(100) and on_disk[100:5000] == data[100:5000]
    with pytest.raises(BlobVerificationError, match="does not match"):
        partial.finish()


def test_corrupt_data_fails_verification_and_discard_cleans_up(tmp_path):
    data = blob(GRANULARITY)
    store = PartialStore(tmp_path)
    partial = store.open(PEER, hashlib.sha256(data).digest(), len(data))
    partial.write(0, bytes(len(data)))
    with pytest.raises(BlobVerificationError):
        partial.finish()
    partial.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_bitmap_for_another_blob_or_size_is_not_trusted(tmp_path):
    data = blob(2 * GRANULARITY)
    sha = hashlib.sha256(data).digest()
    partial = PartialStore(tmp_path).open(PEER, sha, len(data))
    partial.write(0, data)
    partial.checkpoint()
    partial.close()
    assert not PartialStore(tmp_path).open(PEER, sha, len(data) + 1).have
    (tmp_path / f"{PEER.hex()}-{sha.hex()}.bitmap").write_bytes(b"garbage")
    assert not PartialStore(tmp_path).open(PEER, sha, len(data)).have


def test_writes_beyond_the_blob_and_unfinished_blobs_are_refused(tmp_path):
    partial = PartialStore(tmp_path).open(PEER, bytes(32), 10)
    with pytest.raises(PartialStoreError, match="beyond"):
        partial.write(5, b"123456")
    with pytest.raises(PartialStoreError, match="not complete"):
        partial.finish()


def test_remove_forgets_every_file_of_a_blob(tmp_path):
    store = PartialStore(tmp_path)
    partial = store.open(PEER, bytes(32), 10)
    partial.write(0, b"12345")
    partial.close()
    store.remove(PEER, bytes(32))
    assert list(tmp_path.iterdir()) == []
