"""`ocsync daemon`: the engine's nursery tree (DESIGN.md "Engine") and its start and stop.

    Engine
    ├── ControlServer      websocket on 127.0.0.1 (control.py), commands handled by commands.py
    ├── Endpoint           one UDP socket for every peer (net/endpoint.py)
    ├── event pump         transport events → the peers' exchange cores (peers.py)
    ├── FolderSync × folder  watcher → committer, the folder's one writer (folder_sync.py)
    └── Scheduler          sync windows: a full exchange when a peer's window opens

Start order follows "commit before you merge": every folder finishes its journal and commits what changed
while the daemon was stopped before the endpoint opens; only then do peers hear from us.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import trio

from ocsync_tui.engine.control import ControlServer, ensure_token
from ocsync_tui.engine.runtime_files import (
    LOG_NAME,
    exclusive_daemon_lock,
    remove_daemon_info,
    write_daemon_info,
)
from ocsync_tui.engine.sync_engine import SyncEngine
from ocsync_tui.engine.time_of_day import minute_source_from_environment
from ocsync_tui.errors import OcsyncError
from ocsync_tui.identity import load_or_create_identity

log = logging.getLogger("ocsync.daemon")


def _configure_logging(home: Path) -> None:
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger("ocsync")
    root.setLevel(logging.INFO)
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(home / LOG_NAME)):
        handler.setFormatter(formatter)
        root.addHandler(handler)


async def _serve(home: Path, udp_port: int) -> None:
    identity = load_or_create_identity(home)
    engine = SyncEngine(home, identity, udp_port=udp_port, minute_of_day=minute_source_from_environment())
    control = ControlServer(ensure_token(home), engine.commands)
    engine.publish = control.publish
    async with trio.open_nursery() as nursery:
        udp_address = await nursery.start(engine.run)
        control_port = await nursery.start(control.run)
        write_daemon_info(home, udp_port=udp_address[1], control_port=control_port)
        log.info("device %s (%s) listening on UDP port %d, control port %d",
                 identity.name, identity.device_id, udp_address[1], control_port)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for received in signals:
                log.info("stopping on %s", signal.Signals(received).name)
                nursery.cancel_scope.cancel()
                break


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def run_daemon(home: Path, udp_port: int) -> int:
    """Run in the foreground until SIGTERM or Ctrl-C; refuse clearly if the home or port is taken."""
    with exclusive_daemon_lock(home):
        _configure_logging(home)
        try:
            trio.run(_serve, home, udp_port)
        except BaseExceptionGroup as group:
            # A service that cannot start (the port is taken, the store is damaged) fails inside the
            # nursery; the user gets its one-line reason, not the nursery's traceback.
            refusals, others = group.split(OcsyncError)
            if refusals is None or others is not None:
                raise
            raise _first_leaf(refusals) from None
        finally:
            remove_daemon_info(home)
    return 0
