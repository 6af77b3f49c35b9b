"""With a daemon running on the home, the CLI's changes go through it (and show at once in its state)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocsync_tui.identity import load_or_create_identity


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ocsync_tui", "--home", str(home), *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def daemon(home):
    home.mkdir(parents=True)
    with open(home / "test-daemon.stderr", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ocsync_tui", "--home", str(home), "daemon", "--port", "0"],
            stdout=subprocess.DEVNULL, stderr=log,
        )
    try:
        deadline = time.monotonic() + 20
        while not (home / "daemon.json").exists():
            assert process.poll() is None, (home / "test-daemon.stderr").read_text()
            assert time.monotonic() < deadline, "the daemon did not write daemon.json within 20 s"
            time.sleep(0.05)
        yield json.loads((home / "daemon.json").read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_commands_go_through_the_running_daemon(daemon, home, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a\n")
    laptop = load_or_create_identity(tmp_path / "laptop-home").device_id
    assert run_cli(home, "peer", "add", "laptop", "--id", laptop, "--address", "127.0.0.1:9").returncode == 0
    result = run_cli(home, "folder", "add", str(docs))
    assert result.returncode == 0, result.stderr
    assert run_cli(home, "share", "docs", "--with", "laptop").returncode == 0

    state = json.loads(run_cli(home, "status", "--json").stdout)
    assert state["daemon"] == {key: daemon[key] for key in ("pid", "udp_port", "control_port")}
    assert state["peers"][0]["reachable"] is False  # nothing answers on port 9: the daemon knows, the store does not
    assert state["folders"][0]["shared_with"][0]["peer"] == "laptop"
    assert f"UDP port {daemon['udp_port']}" in run_cli(home, "status").stdout

    result = run_cli(home, "sync")
    assert (result.returncode, result.stdout.strip()) == (0, "sync started")
    result = run_cli(home, "share", "docs", "--with", "ghost")  # the daemon's refusal, as one line
    assert result.returncode == 1
    assert result.stderr.strip() == "ocsync: no peer named ghost; `ocsync peer list` shows them"

    # The daemon watches the folder: a change is committed by it, and `commit` asks it rather than writing.
    (docs / "b.txt").write_text("b\n")
    deadline = time.monotonic() + 20
    while "b.txt" not in subprocess.run(["git", "-C", str(docs), "log", "--name-only", "--format="],
                                        capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "the daemon did not commit b.txt"
        time.sleep(0.1)
    result = run_cli(home, "commit", str(docs))
    assert (result.returncode, result.stdout.strip()) == (0, "nothing to commit"), result.stderr
    assert os.path.exists(home / "daemon.json")
