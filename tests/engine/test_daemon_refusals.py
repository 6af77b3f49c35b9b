"""`ocsync daemon` refuses, in one line and with a non-zero exit, a home or a UDP port already in use."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest


def ocsync(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ocsync_tui", "--home", str(home), *args]


@pytest.fixture
def running_daemon(tmp_path: Path):
    home = tmp_path / "first"
    process = subprocess.Popen(ocsync(home, "daemon", "--port", "0"), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not (home / "daemon.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the first daemon did not start"
        time.sleep(0.05)
    yield home, json.loads((home / "daemon.json").read_text())["udp_port"]
    process.terminate()
    process.wait(timeout=20)


def refusal(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_second_daemon_on_the_same_home_is_refused(running_daemon):
    home, _ = running_daemon
    assert "a daemon already runs on" in refusal(ocsync(home, "daemon", "--port", "0"))


def test_a_udp_port_in_use_is_refused(running_daemon, tmp_path):
    _, port = running_daemon
    line = refusal(ocsync(tmp_path / "second", "daemon", "--port", str(port)))
    assert f"UDP port {port} is already in use" in line
