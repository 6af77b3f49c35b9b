"""The files a running daemon keeps in its home: the lock that makes it the only one, and daemon.json.

`daemon.lock` is held with flock for the daemon's lifetime, so a second daemon on the same home is
refused at once and a killed daemon leaves no lock behind (the kernel drops it). `daemon.json` tells
clients where to reach the daemon; it is written atomically once every service listens, and removed on
a clean exit (a stale one is recognised by clients because nothing answers on its port).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ocsync_tui.errors import OcsyncError

LOCK_NAME = "daemon.lock"
INFO_NAME = "daemon.json"
LOG_NAME = "daemon.log"


class DaemonAlreadyRunningError(OcsyncError):
    pass


@contextmanager
def exclusive_daemon_lock(home: Path) -> Iterator[None]:
    path = home / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise DaemonAlreadyRunningError(
                f"a daemon already runs on {home} (pid {owner}); stop it first, or use another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def write_daemon_info(home: Path, *, udp_port: int, control_port: int) -> None:
    info = {"pid": os.getpid(), "udp_port": udp_port, "control_port": control_port, "started": time.time()}
    temporary = home / f".{INFO_NAME}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(info))
    os.replace(temporary, home / INFO_NAME)


def remove_daemon_info(home: Path) -> None:
    try:
        info = json.loads((home / INFO_NAME).read_text())
    except (OSError, ValueError):
        return
    if info.get("pid") == os.getpid():
        (home / INFO_NAME).unlink(missing_ok=True)
