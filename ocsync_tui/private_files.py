"""Files only their owner may read (the device key, the control token): the one check both use."""

import stat
from pathlib import Path


def private_file_problem(path: Path, mode: int, what: str) -> str | None:
    """Why the file at `path`, whose st_mode is `mode`, cannot be trusted to hold `what`; None if it can."""
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file"
    if mode & 0o077:
        return (
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):04o}); "
            f"{what} must be private: chmod 600 {path}"
        )
    return None
