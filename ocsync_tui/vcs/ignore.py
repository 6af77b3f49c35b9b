"""`.ocsyncignore` at the folder root: gitignore syntax, deciding which untracked files a scan skips.

A file that is already tracked stays tracked when a pattern starts to match it (as in git): silently
turning it into a deletion would delete it on every peer.
"""

import os
from pathlib import Path

from dulwich.ignore import IgnoreFilter

IGNORE_FILE = ".ocsyncignore"


class IgnoreRules:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(root) / IGNORE_FILE
        try:
            lines = path.read_bytes().splitlines()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            lines = []
        self._filter = IgnoreFilter(lines, path=str(path)) if any(line.strip() for line in lines) else None

    @property
    def active(self) -> bool:
        return self._filter is not None

    def ignores_file(self, relpath: bytes) -> bool:
        return self._filter is not None and bool(self._filter.is_ignored(os.fsdecode(relpath)))

    def prunes_directory(self, relpath: bytes) -> bool:
        """True when nothing below the directory can be un-ignored, so the walk may skip it whole."""
        if self._filter is None:
            return False
        text = os.fsdecode(relpath) + "/"
        return bool(self._filter.is_ignored(text)) and self._filter.may_prune_directory(text)
