"""The one way to write to a folder's repository: under its lock, after finishing any interrupted apply."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ocsync_tui.vcs.folder import FolderRepo
from ocsync_tui.vcs.journal import finish_interrupted_apply
from ocsync_tui.vcs.lock import FolderLock


@contextmanager
def folder_writer(root: Path) -> Iterator[FolderRepo]:
    folder = FolderRepo.open(root)
    with FolderLock(folder.git_dir):
        finish_interrupted_apply(folder)
        yield folder
