import subprocess
from pathlib import Path

import pytest

from ocsync_tui.identity import load_or_create_identity


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def identity(home: Path):
    return load_or_create_identity(home)


def git_fsck_strict(repo_path: Path) -> None:
    """Fail the test unless the real git CLI accepts the repository."""
    result = subprocess.run(
        ["git", "-C", str(repo_path), "fsck", "--strict", "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"git fsck --strict failed:\n{result.stdout}{result.stderr}"


@pytest.fixture
def cluster(tmp_path: Path):
    """Real daemons on 127.0.0.1 (tests/e2e/daemons.py); every process ends with the test, and the
    daemons' logs go to the teardown output, which pytest shows when a test fails."""
    from tests.e2e.daemons import running_cluster

    yield from running_cluster(tmp_path)
