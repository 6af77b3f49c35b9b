"""Import benchmark: commit 10,000 new files one commit each, against git doing the same.

Figures (the last line of output is one JSON object):
- ocsync: `init_folder` of 200 folders x 50 files (1-8 KiB) in a child process: commits per second and
  the child's peak RSS.
- git_cli: the seed's method, `git add FILE && git commit` per file, on a 500-file sample.
- fast_import: `git fast-import` of the same 10,000 one-file commits.
- flat: one folder of 10,000 files imported by ocsync; .git size against `git gc --aggressive` of the
  same history.
Goals: ocsync per-commit rate >= 40x git_cli's, peak RSS < 300 MB, flat size ratio <= 3.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from ocsync_tui.identity import load_or_create_identity
from ocsync_tui.vcs.folder import init_folder
identity = load_or_create_identity(Path(sys.argv[1]))
started = time.perf_counter()
report = init_folder(Path(sys.argv[2]), identity)
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "commits": len(report.committed),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@ocsync.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@ocsync.invalid",
}


def make_files(root: Path, layout: list[str], seed: int) -> None:
    rng = random.Random(seed)
    for relpath in layout:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(1024, 8192)))


def nested_layout() -> list[str]:
    return [f"dir{d:03}/file{f:02}.bin" for d in range(200) for f in range(50)]


def flat_layout() -> list[str]:
    return [f"file{f:05}.bin" for f in range(10_000)]


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_ocsync(work: Path, root: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(work / "home"), str(root)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def git_cli_rate(work: Path, layout: list[str], sample: int) -> float:
    root = work / "git-cli"
    make_files(root, layout[:sample], seed=1)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    started = time.perf_counter()
    for relpath in layout[:sample]:
        subprocess.run(["git", "-C", str(root), "add", relpath], check=True, env=_GIT_ENV)
        subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", f"add {relpath}"], check=True, env=_GIT_ENV)
    return sample / (time.perf_counter() - started)


def fast_import_rate(work: Path, source: Path, layout: list[str]) -> float:
    root = work / "fast-import"
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    started = time.perf_counter()
    process = subprocess.Popen(["git", "-C", str(root), "fast-import", "--quiet"], stdin=subprocess.PIPE)
    assert process.stdin is not None
    moment = int(time.time())
    for mark, relpath in enumerate(layout, start=1):
        data = (source / relpath).read_bytes()
        message = f"add {relpath}\n".encode()
        parts = [b"blob\nmark :%d\ndata %d\n" % (mark, len(data)), data, b"\n"]
        parts.append(b"commit refs/heads/main\n")
        parts.append(b"committer bench <bench@ocsync.invalid> %d +0000\n" % moment)
        parts.append(b"data %d\n%s" % (len(message), message))
        parts.append(b"M 100644 :%d %s\n\n" % (mark, relpath.encode()))
        process.stdin.write(b"".join(parts))
    process.stdin.close()
    assert process.wait() == 0
    return len(layout) / (time.perf_counter() - started)


def gc_aggressive_size(repo: Path, work: Path) -> int:
    copy = work / "gc-copy"
    shutil.copytree(repo / ".git", copy / ".git")
    subprocess.run(["git", "-C", str(copy), "gc", "--aggressive", "--prune=now", "--quiet"], check=True)
    return du(copy / ".git" / "objects")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--git-sample", type=int, default=500)
    parser.add_argument("--skip-flat", action="store_true")
    args = parser.parse_args()
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="ocsync-bench-") as scratch:
        work = Path(scratch)
        layout = nested_layout()
        nested = work / "nested"
        make_files(nested, layout, seed=1)
        source = work / "nested-source"
        shutil.copytree(nested, source)
        ocsync = run_ocsync(work, nested)
        assert ocsync["commits"] == len(layout)
        figures["ocsync_commits_per_s"] = round(ocsync["commits"] / ocsync["seconds"], 1)
        figures["ocsync_seconds"] = round(ocsync["seconds"], 2)
        figures["ocsync_peak_rss_mb"] = round(ocsync["peak_rss_mb"], 1)
        figures["git_cli_commits_per_s"] = round(git_cli_rate(work, layout, args.git_sample), 1)
        figures["fast_import_commits_per_s"] = round(fast_import_rate(work, source, layout), 1)
        figures["ratio_vs_git_cli"] = round(figures["ocsync_commits_per_s"] / figures["git_cli_commits_per_s"], 1)
        figures["ratio_vs_fast_import"] = round(
            figures["ocsync_commits_per_s"] / figures["fast_import_commits_per_s"], 2
        )
        figures["nested_repo_bytes"] = du(nested / ".git" / "objects")
        if not args.skip_flat:
            flat = work / "flat"
            make_files(flat, flat_layout(), seed=2)
            flat_run = run_ocsync(work, flat)
            figures["flat_ocsync_seconds"] = round(flat_run["seconds"], 2)
            figures["flat_ocsync_peak_rss_mb"] = round(flat_run["peak_rss_mb"], 1)
            figures["flat_repo_bytes"] = du(flat / ".git" / "objects")
            figures["flat_gc_aggressive_bytes"] = gc_aggressive_size(flat, work)
            figures["flat_size_ratio"] = round(figures["flat_repo_bytes"] / figures["flat_gc_aggressive_bytes"], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
