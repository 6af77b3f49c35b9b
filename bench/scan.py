"""Scan benchmark: a no-change `ocsync commit` on 100,000 files against `git status` on the same tree.

Setup (not timed): 1,000 folders x 100 small files, made an ocsync folder by `ocsync init`. Then, after
one warm-up of each, alternating runs of:
- git_status: `git status --porcelain` (it walks the folder and lstat's every file against the index).
- ocsync_cli: `python -m ocsync_tui commit FOLDER`, the whole command including interpreter start-up,
  run as an installed package runs: with its bytecode compiled once (pip compiles at install; the warm-up
  run writes it to a scratch cache even where PYTHONDONTWRITEBYTECODE is set).
- ocsync_scan: `commit_pending` in this process (the scan alone, without start-up).
Goal: ocsync no more than 2x git's time. Beside wall-clock time, the CPU time (user + system) of each
command is reported: on a shared, loaded machine it is the steadier figure. The last line of output is one
JSON object of medians.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ocsync_tui.identity import load_or_create_identity
from ocsync_tui.vcs.committer import commit_pending
from ocsync_tui.vcs.folder import FolderRepo, init_folder


def make_tree(root: Path, folders: int, files_per_folder: int) -> None:
    for folder in range(folders):
        directory = root / f"dir{folder:04}"
        directory.mkdir(parents=True)
        for index in range(files_per_folder):
            (directory / f"file{index:03}.txt").write_bytes(b"%d %d\n" % (folder, index))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one run of `command`."""
    cpu = children_cpu()
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, env=env)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    return elapsed, children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--files-per-folder", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ocsync-bench-") as scratch:
        work = Path(scratch)
        home, root = work / "home", work / "folder"
        identity = load_or_create_identity(home)
        make_tree(root, args.folders, args.files_per_folder)
        started = time.perf_counter()
        init_folder(root, identity)
        setup_seconds = time.perf_counter() - started
        git_status = ["git", "-C", str(root), "status", "--porcelain"]
        ocsync_commit = [sys.executable, "-m", "ocsync_tui", "--home", str(home), "commit", str(root)]
        installed = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        installed["PYTHONPYCACHEPREFIX"] = str(work / "bytecode")
        timed(git_status)
        timed(ocsync_commit, installed)
        samples: dict[str, list[float]] = {
            name: [] for name in ("git_status", "ocsync_cli", "ocsync_scan", "git_status_cpu", "ocsync_cli_cpu")
        }
        for _ in range(args.runs):
            for name, command, env in (("git_status", git_status, None), ("ocsync_cli", ocsync_commit, installed)):
                elapsed, cpu = timed(command, env)
                samples[name].append(elapsed)
                samples[name + "_cpu"].append(cpu)
            folder = FolderRepo.open(root)
            started = time.perf_counter()
            report = commit_pending(folder, identity)
            samples["ocsync_scan"].append(time.perf_counter() - started)
            folder.close()
            assert not report.committed, "a no-change scan committed something"
        medians = {name: round(statistics.median(values), 3) for name, values in samples.items()}
        print(json.dumps({
            "files": args.folders * args.files_per_folder,
            "runs": args.runs,
            "setup_init_seconds": round(setup_seconds, 1),
            **{f"{name}_s": value for name, value in medians.items()},
            "ratio_cli_vs_git_status": round(medians["ocsync_cli"] / medians["git_status"], 2),
            "ratio_scan_vs_git_status": round(medians["ocsync_scan"] / medians["git_status"], 2),
            "ratio_cli_cpu_vs_git_status_cpu": round(medians["ocsync_cli_cpu"] / medians["git_status_cpu"], 2),
        }))

if __name__ == "__main__":
    main()
