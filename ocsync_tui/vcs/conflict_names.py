"""Conflict-copy names: `name.sync-conflict-YYYYMMDD-HHMMSS-DEVSHORT.ext`, and back to `name.ext`.

The time is the UTC commit time of the version being moved aside, DEVSHORT the first seven characters of
its device ID. A name already taken gets `-HASH` (the first seven hex digits of the content's blob id),
then `-HASH-2`, `-HASH-3`, … so a copy is always placed and every peer picks the same name.
"""

import re
from collections.abc import Iterator
from datetime import UTC, datetime

from ocsync_tui.vcs.paths import NAME_MAX_BYTES

_MARKER = ".sync-conflict-"
_LATEST_FORMATTABLE_TIME = 253402300799  # 9999-12-31 23:59:59 UTC
_COPY_NAME = re.compile(
    r"(?P<stem>.+)\.sync-conflict-\d{8}-\d{6}-[A-Za-z0-9]{0,7}(?:-[0-9a-f]{7}(?:-\d+)?)?(?P<ext>\.[^.]+)?",
    re.DOTALL,
)


def _split_extension(name: str) -> tuple[str, str]:
    """`archive.tar.gz` → (`archive.tar`, `.gz`); a dotfile like `.bashrc` has no extension."""
    stem, dot, extension = name.rpartition(".")
    if not stem or not dot or not extension:
        return name, ""
    return stem, dot + extension


def _fit(stem: str, suffix: str, extension: str) -> str:
    """Shorten the stem (then drop the extension) until the name fits a file name's byte limit."""
    if len((suffix + extension).encode("utf-8")) > NAME_MAX_BYTES // 2:
        stem, extension = stem + extension, ""
    while stem and len((stem + suffix + extension).encode("utf-8")) > NAME_MAX_BYTES:
        stem = stem[:-1]
    return stem + suffix + extension


def _device_short(device_id: str) -> str:
    """First seven letters or digits: ocsync device IDs lose their dashes, anything else its punctuation."""
    return "".join(c for c in device_id if c.isascii() and c.isalnum())[:7]


def _stamp(when: int) -> str:
    clamped = min(max(when, 0), _LATEST_FORMATTABLE_TIME)
    return datetime.fromtimestamp(clamped, UTC).strftime("%Y%m%d-%H%M%S")


def conflict_copy_names(path: str, when: int, device_id: str, content_id: bytes) -> Iterator[str]:
    """Candidate paths, best first and without end, for a copy of `path`'s version made at `when` on
    `device_id` with blob id `content_id`; the caller takes the first one not already in its tree."""
    directory, slash, name = path.rpartition("/")
    stem, extension = _split_extension(name)
    marked = f"{_MARKER}{_stamp(when)}-{_device_short(device_id)}"
    content_hash = content_id[:7].decode("ascii")
    suffixes = [marked, f"{marked}-{content_hash}"]
    yield from (directory + slash + _fit(stem, suffix, extension) for suffix in suffixes)
    number = 2
    while True:
        yield directory + slash + _fit(stem, f"{marked}-{content_hash}-{number}", extension)
        number += 1


def conflict_copy_origin(path: str) -> str | None:
    """The path a conflict copy was named after, or None if `path` does not name a conflict copy."""
    directory, slash, name = path.rpartition("/")
    match = _COPY_NAME.fullmatch(name)
    if match is None:
        return None
    return directory + slash + match["stem"] + (match["ext"] or "")
