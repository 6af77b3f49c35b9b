"""`ocsync init/commit/log/restore` as a user runs them: separate processes on a real folder."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import git_fsck_strict

pytest.importorskip("ocsync_tui.vcs.journal")  # commit and restore go through vcs/writer.py


def ocsync(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ocsync_tui", "--home", str(home), *args], capture_output=True, text=True, timeout=120
    )


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout


def test_init_commit_log_restore(tmp_path, home):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text("first\n")
    (root / "sub").mkdir()
    (root / "sub/b.txt").write_text("b\n")

    result = ocsync(home, "init", str(root))
    assert result.returncode == 0, result.stderr
    assert sorted(tuple(line.split()[:2]) for line in result.stdout.splitlines()) == [
        ("add", "a.txt"), ("add", "sub/b.txt")
    ]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr

    (root / "a.txt").write_text("second\n")
    result = ocsync(home, "commit", str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("modify  a.txt")
    assert ocsync(home, "commit", str(root)).stdout.strip() == "nothing to commit"

    result = ocsync(home, "log", str(root / "a.txt"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[-1] for line in lines] == ["modify", "add"]
    commits = git(root, "log", "--format=%H", "--", "a.txt").split()
    assert [line.split()[0] for line in lines] == [commit[:10] for commit in commits]

    first = lines[1].split()[0]
    result = ocsync(home, "restore", str(root / "a.txt"), "--rev", first[:7])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"restored a.txt as of {first}")
    assert (root / "a.txt").read_text() == "first\n"
    assert git(root, "log", "-1", "--format=%s").strip() == "modify a.txt"
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    git_fsck_strict(root)


def test_errors_are_one_clear_line(tmp_path, home):
    foreign = tmp_path / "project"
    foreign.mkdir()
    git(foreign, "init", "-q")
    result = ocsync(home, "init", str(foreign))
    assert result.returncode == 1
    assert result.stderr.startswith("ocsync: ") and "did not create" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    result = ocsync(home, "commit", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and "not a directory" in result.stderr

    root = tmp_path / "docs"
    assert ocsync(home, "init", str(root)).returncode == 0
    (root / "x.txt").write_text("x\n")
    assert ocsync(home, "commit", str(root)).returncode == 0
    result = ocsync(home, "restore", str(root / "x.txt"), "--rev", "0000000")
    assert result.returncode == 1 and "no commit 0000000" in result.stderr
    result = ocsync(home, "log", str(tmp_path / "elsewhere.txt"))
    assert result.returncode == 1 and "not inside an ocsync folder" in result.stderr
    git_fsck_strict(root)
