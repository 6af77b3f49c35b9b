"""Bundle size and time for the edits ocsync sees most, against `git bundle create` on the same history.

Cases: a 10 MB file edited in one byte (goal: bundle <= 4 KiB), the same file rewritten throughout
(goal: bundle created in under 2 s), 100 small files each edited in one line (bundle bytes against
bytes changed), and a full bundle of 1,500 per-file commits: creation against `git bundle create`,
import (quarantined_import into an empty folder) against `git bundle unbundle`. Each figure is the
median of several runs; the last line printed is a JSON object.

Run: .venv/bin/python bench/bundle_delta.py [--runs N]
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dulwich.repo import Repo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocsync_tui.vcs.bundle import create_bundle, quarantined_import  # noqa: E402

BIG = 10 * 1024 * 1024
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@ocsync.invalid",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@ocsync.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


class Folder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.git_dir = path / ".git"
        self.repo = Repo(str(path))

    def head(self) -> bytes | None:
        return self.repo.refs[b"refs/heads/main"]


def git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=GIT_ENV).stdout


def commit(repo: Path, names: list[str]) -> str:
    git(repo, "add", *names)
    git(repo, "commit", "-q", "-m", f"edit {names[0]}")
    return git(repo, "rev-parse", "HEAD").decode().strip()


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(repo_path: Path, since: str, runs: int) -> dict:
    folder = Folder(repo_path)
    ours, theirs = repo_path.parent / "ours.bundle", repo_path.parent / "git.bundle"
    our_times = [timed(lambda: create_bundle(folder, [since], ours)) for _ in range(runs)]
    git_times = [
        timed(lambda: git(repo_path, "bundle", "create", "-q", str(theirs), "main", f"^{since}")) for _ in range(runs)
    ]
    git(repo_path, "bundle", "verify", "-q", str(ours))
    folder.repo.close()
    ours_s, git_s = statistics.median(our_times), statistics.median(git_times)
    return {
        "bundle_bytes": ours.stat().st_size,
        "git_bundle_bytes": theirs.stat().st_size,
        "seconds": round(ours_s, 4),
        "git_seconds": round(git_s, 4),
        "time_ratio_vs_git": round(ours_s / git_s, 2),
    }


def per_file_history(repo: Path, commits: int, rng: random.Random) -> None:
    """`commits` one-file commits (new files and edits, 1-8 KiB) spread over 30 directories, via fast-import."""
    stream = bytearray()
    for number in range(commits):
        path = f"dir{rng.randrange(30):02d}/file{rng.randrange(commits // 2):04d}.txt".encode()
        content = rng.randbytes(rng.randrange(1024, 8192))
        stream += b"commit refs/heads/main\ncommitter Bench <bench@ocsync.invalid> %d +0000\n" % (1_700_000_000 + number)
        stream += b"data 5\nedit\n"
        stream += b"M 100644 inline %s\ndata %d\n%s\n" % (path, len(content), content)
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"], input=bytes(stream), check=True, env=GIT_ENV)


def measure_full_history(repo_path: Path, runs: int) -> dict:
    folder = Folder(repo_path)
    ours, theirs = repo_path.parent / "ours-full.bundle", repo_path.parent / "git-full.bundle"
    create = [timed(lambda: create_bundle(folder, [], ours)) for _ in range(runs)]
    git_create = [timed(lambda: git(repo_path, "bundle", "create", "-q", str(theirs), "main")) for _ in range(runs)]
    folder.repo.close()

    def fresh_folder(name: str) -> Folder:
        path = repo_path.parent / name
        git(repo_path.parent, "init", "-q", "-b", "main", str(path))
        return Folder(path)

    def import_ours(run: int) -> float:
        receiver = fresh_folder(f"receiver{run}")
        start = time.perf_counter()
        with quarantined_import(receiver, ours):
            pass
        elapsed = time.perf_counter() - start
        receiver.repo.close()
        return elapsed

    imports = [import_ours(run) for run in range(runs)]
    git_imports = [
        timed(lambda run=run: git(fresh_folder(f"git-receiver{run}").path, "bundle", "unbundle", str(theirs)))
        for run in range(runs)
    ]
    create_s, git_create_s = statistics.median(create), statistics.median(git_create)
    import_s, git_import_s = statistics.median(imports), statistics.median(git_imports)
    return {
        "bundle_bytes": ours.stat().st_size,
        "git_bundle_bytes": theirs.stat().st_size,
        "create_seconds": round(create_s, 3),
        "git_create_seconds": round(git_create_s, 3),
        "create_ratio_vs_git": round(create_s / git_create_s, 2),
        "import_seconds": round(import_s, 3),
        "git_unbundle_seconds": round(git_import_s, 3),
        "import_ratio_vs_git": round(import_s / git_import_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    rng = random.Random(42)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "folder"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        content = bytearray(rng.randbytes(BIG))
        (repo / "big.bin").write_bytes(content)
        first = commit(repo, ["big.bin"])
        content[BIG // 2] ^= 0x01
        (repo / "big.bin").write_bytes(content)
        edited = commit(repo, ["big.bin"])
        results["one_byte_edit_10MB"] = measure(repo, first, runs)
        results["one_byte_edit_10MB"]["goal_bytes"] = 4096

        (repo / "big.bin").write_bytes(rng.randbytes(BIG))
        commit(repo, ["big.bin"])
        results["rewritten_10MB"] = measure(repo, edited, runs)
        results["rewritten_10MB"]["goal_seconds"] = 2.0

        names = [f"notes/file{number:03d}.txt" for number in range(100)]
        (repo / "notes").mkdir()
        for name in names:
            (repo / name).write_bytes(b"".join(b"%s line %d: some text\n" % (name.encode(), i) for i in range(200)))
        base = commit(repo, names)
        changed = 0
        for name in names:
            lines = (repo / name).read_bytes().split(b"\n")
            replacement = b"edited %d" % rng.randrange(10**6)
            changed += len(replacement)
            lines[rng.randrange(len(lines) - 1)] = replacement
            (repo / name).write_bytes(b"\n".join(lines))
            commit(repo, [name])
        small = measure(repo, base, runs)
        small["bytes_changed"] = changed
        small["bundle_bytes_per_byte_changed"] = round(small["bundle_bytes"] / changed, 2)
        results["100_small_files_edited"] = small

        history = Path(scratch) / "history"
        git(Path(scratch), "init", "-q", "-b", "main", str(history))
        per_file_history(history, 1500, rng)
        results["1500_per_file_commits_full"] = measure_full_history(history, runs)

    print(json.dumps(results))


if __name__ == "__main__":
    main()
