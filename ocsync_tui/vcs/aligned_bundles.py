"""Bundles whose pack starts on a 4 KiB boundary, so a receiver keeps the pack without copying it.

A received bundle is header + pack, and the pack must become a file of its own in the object store.
Copying a first sync's 550 MB pack costs as much disk time as receiving it. Linux can cut whole blocks
off the start of a file (fallocate FALLOC_FL_COLLAPSE_RANGE, on ext4 and XFS): if the header ends on a
block boundary, cutting it off leaves exactly the pack, which is then renamed into the store. The giver
makes that possible with one more ref line in the header, ``refs/ocsync/padding/0…``, pointing at the
head like ``main``; git lists it in `git bundle verify` and ignores it on clone, and our reader takes
``main``. Where the cut is not possible (another filesystem, another disk than the store's, an unaligned
bundle) the receiver copies the pack as before.

API (stable):

- ``align_header(header, head) -> bytes``: the v2 header (ending in its blank line) with a padding ref
  line for the commit ``head`` (hex) added, so that its length is a multiple of PACK_ALIGNMENT.
- ``take_pack_in_place(bundle_path, pack_start, pack_dir) -> str | None``: cut the first `pack_start`
  bytes off the bundle file and move what is left (the pack) into `pack_dir` as a ``tmp_pack_*`` file;
  its new path, or None (the bundle untouched) where that is not possible.
"""

import ctypes
import errno
import os
import tempfile

PACK_ALIGNMENT = 4096
_PADDING_REF = b"refs/ocsync/padding"
_COMPONENT = 200  # git refuses none this long, and `git bundle verify` lists it on a few screen lines
_FALLOC_FL_COLLAPSE_RANGE = 0x08
_NOT_HERE = {errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EXDEV}


def align_header(header: bytes, head: bytes) -> bytes:
    """The header with a padding ref line, its length a multiple of PACK_ALIGNMENT."""
    gap = -len(header) % PACK_ALIGNMENT
    overhead = len(head) + 2  # the id, a space, the newline
    if gap < overhead + len(_PADDING_REF) + 2:
        gap += PACK_ALIGNMENT
    return header[:-1] + head + b" " + _padding_ref(gap - overhead) + b"\n\n"


def _padding_ref(length: int) -> bytes:
    """refs/ocsync/padding/000…/000… of exactly `length` bytes."""
    name, remaining = [_PADDING_REF], length - len(_PADDING_REF)
    while remaining > 0:
        piece = min(_COMPONENT + 1, remaining)
        if remaining - piece == 1:
            piece -= 1  # never leave a lone "/" for the last component
        name.append(b"0" * (piece - 1))
        remaining -= piece
    return b"/".join(name)


def take_pack_in_place(bundle_path: str | os.PathLike[str], pack_start: int, pack_dir: str) -> str | None:
    """Cut the header off the bundle file and move the pack into `pack_dir`; see the module docstring."""
    if pack_start % PACK_ALIGNMENT or os.stat(bundle_path).st_dev != os.stat(pack_dir).st_dev:
        return None
    fallocate = getattr(ctypes.CDLL(None, use_errno=True), "fallocate", None)
    if fallocate is None:
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fd = os.open(bundle_path, os.O_RDWR)
    try:
        if os.fstat(fd).st_size <= pack_start:
            return None
        if fallocate(fd, _FALLOC_FL_COLLAPSE_RANGE, 0, pack_start) != 0:
            code = ctypes.get_errno()
            if code in _NOT_HERE:
                return None
            raise OSError(code, os.strerror(code), os.fspath(bundle_path))
    finally:
        os.close(fd)
    handle, target = tempfile.mkstemp(dir=pack_dir, prefix="tmp_pack_")
    os.close(handle)
    os.replace(bundle_path, target)
    return target
