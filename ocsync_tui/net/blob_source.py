"""What a giver sends: a blob of known size and SHA-256, read in chunks at any offset.

`FileBlobSource` reads with os.pread, so no file position is shared and a 1 GB blob costs no memory;
`BytesBlobSource` serves small control messages (issue 4's) from memory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

from ocsync_tui.errors import OcsyncError

_HASH_BLOCK = 1 << 20
READ_AHEAD_BYTES = 256 << 10


class BlobSourceError(OcsyncError):
    pass


class BlobSource(Protocol):
    size: int
    sha256: bytes
    name: str
    kind: str
    metadata: bytes

    def read(self, offset: int, length: int) -> bytes: ...


def sha256_of_file(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
    return digest.digest()


class FileBlobSource:
    """A file that must not change while it is offered (bundles are written once, then sent)."""

    def __init__(
        self, path: Path, sha256: bytes | None = None, *, name: str = "", kind: str = "", metadata: bytes = b""
    ) -> None:
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as error:
            raise BlobSourceError(f"cannot read {path} to send it: {error.strerror}") from error
        self.path = path
        self._cached = b""
        self._cached_offset = 0
        self.size = os.fstat(self._fd).st_size
        self.sha256 = sha256 if sha256 is not None else sha256_of_file(path)
        self.name, self.kind, self.metadata = name, kind, metadata

    def read(self, offset: int, length: int) -> bytes:
        # Frames ask for ~1–8 KB in order: one pread of READ_AHEAD_BYTES serves many of them.
        start = offset - self._cached_offset
        if 0 <= start and start + length <= len(self._cached):
            return self._cached[start : start + length]
        block = os.pread(self._fd, max(length, READ_AHEAD_BYTES), offset)
        if len(block) < length:
            raise BlobSourceError(f"{self.path} shrank while it was being sent")
        self._cached, self._cached_offset = block, offset
        return block[:length]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileBlobSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BytesBlobSource:
    def __init__(self, data: bytes, *, name: str = "", kind: str = "", metadata: bytes = b"") -> None:
        self._data = memoryview(bytes(data))
        self.size = len(data)
        self.sha256 = hashlib.sha256(data).digest()
        self.name, self.kind, self.metadata = name, kind, metadata

    def read(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + length].tobytes()
