"""`ocsync demo`: two devices on this machine, paired, sharing a folder each way, for a first look.

Each device is a real daemon process with its own home under one temporary directory, talking over
loopback UDP exactly as two machines would. The demo prints the folder paths and keeps running until
Ctrl-C, then stops both daemons (the directory stays, so nothing you wrote there is lost).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ocsync_tui.control_client import connect_to_daemon
from ocsync_tui.errors import OcsyncError
from ocsync_tui.identity import load_or_create_identity, rename_device

_START_TIMEOUT = 20.0
_DEVICES = ("alice", "bob")


class DemoError(OcsyncError):
    pass


def _start_daemon(home: Path) -> subprocess.Popen:
    log = open(home / "demo-daemon.stderr", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "ocsync_tui", "--home", str(home), "daemon", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,  # Ctrl-C in the terminal reaches the demo, which stops the daemons itself
    )


def _wait_for_daemon(home: Path, process: subprocess.Popen):
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (home / "demo-daemon.stderr").read_text(errors="replace")[-2000:]
            raise DemoError(f"the daemon for {home.name} exited ({process.returncode}):\n{log}")
        client = connect_to_daemon(home)
        if client is not None:
            return client
        time.sleep(0.1)
    raise DemoError(f"the daemon for {home.name} did not start within {_START_TIMEOUT:.0f} s")


def _exit_on_sigterm(signal_number, frame) -> None:
    raise KeyboardInterrupt  # a plain kill of the demo must stop its daemons too


def run_demo(args) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    root = Path(tempfile.mkdtemp(prefix="ocsync-demo-"))
    homes = {name: root / name / "home" for name in _DEVICES}
    processes: list[subprocess.Popen] = []
    try:
        identities = {}
        for name, home in homes.items():
            home.mkdir(parents=True)
            load_or_create_identity(home)
            identities[name] = rename_device(home, name)
            processes.append(_start_daemon(home))
        clients = {name: _wait_for_daemon(home, process) for (name, home), process in zip(homes.items(), processes)}
        ports = {name: json.loads((home / "daemon.json").read_text())["udp_port"] for name, home in homes.items()}
        for name, other in (("alice", "bob"), ("bob", "alice")):
            clients[name].call(
                "peer.add", name=other, device_id=identities[other].device_id, address=f"127.0.0.1:{ports[other]}"
            )
        shared = {}
        for owner, other in (("alice", "bob"), ("bob", "alice")):
            folder_name = f"from-{owner}"
            path = root / owner / folder_name
            path.mkdir()
            (path / "hello.txt").write_text(f"Hello from {owner}. Edit me, or add files next to me.\n")
            clients[owner].call("folder.add", path=str(path), name=folder_name)
            clients[owner].call("share", folder=folder_name, peer=other)
            shared[folder_name] = (owner, other, path)
        for folder_name, (owner, other, path) in shared.items():
            _accept_when_offered(clients[other], owner, folder_name, root / other / folder_name)
        print(f"Two devices are running under {root}\n")
        for folder_name, (owner, other, path) in shared.items():
            print(f"  {folder_name}:  {path}\n  {'':{len(folder_name)}}   {root / other / folder_name}\n")
        print("Edit a file in one copy and watch it appear in the other. Per-file history:")
        print(f"  ocsync log {root / 'alice' / 'from-alice' / 'hello.txt'}")
        print(f"Status: ocsync --home {homes['alice']} status\nCtrl-C stops both devices.", flush=True)
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        raise DemoError("a demo daemon stopped; its log is in " + str(root))
    except KeyboardInterrupt:
        print("\nstopping both devices; the folders stay in " + str(root))
        return 0
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _accept_when_offered(client, peer: str, folder_name: str, path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        offers = client.call("offers")
        if any(offer["peer"] == peer and offer["folder_name"] == folder_name for offer in offers):
            client.call("accept", peer=peer, folder=folder_name, path=str(path))
            return
        time.sleep(0.1)
    raise DemoError(f"the offer of {folder_name} from {peer} did not arrive within {_START_TIMEOUT:.0f} s")
