"""Which file names this disk treats as one: does it fold case, does it normalise Unicode?

Found by a probe in the repository's .git directory (same file system as the folder), not guessed from
the platform: macOS and Windows disks can be either, and so can a Linux mount of one.
"""

import os
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path

from ocsync_tui.vcs.paths import collision_key


@dataclass(frozen=True)
class DiskNaming:
    folds_case: bool
    normalizes_unicode: bool

    @property
    def collides(self) -> bool:
        """Can two different tree paths name one file on this disk?"""
        return self.folds_case or self.normalizes_unicode

    def key(self, path: bytes) -> bytes:
        """Equal for two paths this disk may store as one (paths.collision_key, which may fold more
        than this disk does: that costs an extra conflict copy, never a file)."""
        if not self.collides:
            return path
        return collision_key(path.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


CASE_SENSITIVE = DiskNaming(folds_case=False, normalizes_unicode=False)


def _same_file_under_other_name(directory: Path, written: str, other: str) -> bool:
    path = directory / written
    path.touch()
    try:
        return os.path.lexists(directory / other)
    finally:
        path.unlink()


def probe_disk_naming(git_dir: Path) -> DiskNaming:
    token = uuid.uuid4().hex
    return DiskNaming(
        folds_case=_same_file_under_other_name(git_dir, f"ocsync-probe-{token}-Ab", f"ocsync-probe-{token}-aB"),
        normalizes_unicode=_same_file_under_other_name(
            git_dir,
            unicodedata.normalize("NFC", f"ocsync-probe-{token}-\u00e9"),
            unicodedata.normalize("NFD", f"ocsync-probe-{token}-\u00e9"),
        ),
    )
