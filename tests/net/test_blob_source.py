"""Blob sources serve exactly the bytes at any offset, in order or not (read-ahead must not lie)."""

import hashlib
import random

import pytest

from ocsync_tui.net.blob_source import READ_AHEAD_BYTES, BlobSourceError, BytesBlobSource, FileBlobSource


def test_file_source_reads_any_offset_and_knows_its_hash(tmp_path):
    data = random.Random(1).randbytes(3 * READ_AHEAD_BYTES + 777)
    path = tmp_path / "blob"
    path.write_bytes(data)
    rng = random.Random(2)
    with FileBlobSource(path, name="b") as source:
        assert source.size == len(data) and source.sha256 == hashlib.sha256(data).digest()
        for _ in range(300):
            offset = rng.randrange(len(data))
            length = min(rng.randrange(1, 9000), len(data) - offset)
            assert source.read(offset, length) == data[offset : offset + length]
    memory = BytesBlobSource(data)
    assert memory.sha256 == hashlib.sha256(data).digest() and memory.read(10, 5) == data[10:15]


def test_missing_or_shrunk_file_is_a_clear_error(tmp_path):
    with pytest.raises(BlobSourceError, match="cannot read"):
        FileBlobSource(tmp_path / "absent")
    path = tmp_path / "blob"
    path.write_bytes(bytes(100))
    with FileBlobSource(path, sha256=bytes(32)) as source:
        path.write_bytes(bytes(10))
        with pytest.raises(BlobSourceError, match="shrank"):
            source.read(50, 20)
