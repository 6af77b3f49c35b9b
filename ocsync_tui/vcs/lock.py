"""One writer per folder repository: an exclusive, non-blocking flock on a file inside .git.

The CLI and the daemon may both want to commit to a folder; the second one gets a clear error instead of
interleaving its writes. The lock file also records the holder's pid, so the error can say who it is.
flock locks die with their process, so a killed writer never leaves the folder locked.
"""

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from ocsync_tui.errors import OcsyncError

LOCK_NAME = "ocsync.lock"


class FolderLockedError(OcsyncError):
    """Another process is writing this folder's repository."""


class FolderLock:
    """`with FolderLock(git_dir):` holds the folder's write lock or raises FolderLockedError at once."""

    def __init__(self, git_dir: str | os.PathLike[str]) -> None:
        self.path = Path(git_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "FolderLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(fd)
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise FolderLockedError(f"cannot lock {self.path}: {error.strerror}") from None
            who = f"process {holder}" if holder else "another process"
            raise FolderLockedError(
                f"{who} is writing this folder ({self.path.parent.parent}); "
                "wait for it to finish (or stop the ocsync daemon) and try again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        return int(text) if text else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None
