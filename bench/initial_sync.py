"""Initial-sync benchmark: a committed folder synced to an empty peer by two real daemons, against
`rsync -a` of the same folder in the same run.

Data sets (random, incompressible content; 100 files per directory):
  (a) 5,000 files of 1-64 KiB plus 8 files of 40-60 MB;   goal <= 3x rsync
  (b) 10,000 files of 1-8 KiB;                             goal <= 5x rsync
(Syncthing measured here: 8.7x and 23x.) `--quick`: (a) 500 files plus 2 of 4-6 MB, (b) 1,000 files.

Each run: a fresh sender home registers the folder (`ocsync folder add`, which commits it; untimed),
both daemons start on loopback and pair, the sender shares the folder, and the receiver's `ocsync
accept` starts the clock. It stops when both folders have the same HEAD; then (untimed) every file is
compared by SHA-256 and the run only counts if they all match. rsync copies the folder's files (without
.git and the folder marker, which rsync users would not have) into an empty directory:
`rsync -a --exclude=/.git --exclude=/.ocsync-folder SRC/ DST/`. Peak daemon memory is each daemon's
VmHWM from /proc/PID/status at the end of the run; goal <= 120 MB. Both timed sections start after
`sync`, so neither pays for the other's dirty pages (rsync never fsyncs, ocsync does: that difference is
part of the comparison). Without rsync on PATH the ratios are null and the output says why. The last
line of output is one JSON object of medians. Beside wall-clock time, the CPU time (user + system) of both
daemons during the sync and of rsync is reported: on a shared, loaded machine it is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: `tests.e2e.daemons`

from tests.e2e.daemons import Cluster, head, pair, tree_digests, wait_for_offer  # noqa: E402

KIB = 1024
MB = 1_000_000
FILES_PER_DIRECTORY = 100
SYNC_TIMEOUT = 1800.0
MEMORY_GOAL_MB = 120


@dataclass(frozen=True)
class DataSet:
    name: str
    small_files: int
    small_size: tuple[int, int]
    large_files: int
    large_size: tuple[int, int]
    goal_ratio: float


FULL = [
    DataSet("a", 5000, (1 * KIB, 64 * KIB), 8, (40 * MB, 60 * MB), 3.0),
    DataSet("b", 10000, (1 * KIB, 8 * KIB), 0, (0, 0), 5.0),
]
QUICK = [
    DataSet("a", 500, (1 * KIB, 64 * KIB), 2, (4 * MB, 6 * MB), 3.0),
    DataSet("b", 1000, (1 * KIB, 8 * KIB), 0, (0, 0), 5.0),
]


def make_data(root: Path, data: DataSet, seed: int) -> tuple[int, int]:
    """Write the data set under root; returns (files, bytes)."""
    generator = random.Random(seed)
    total = 0
    for index in range(data.small_files):
        directory = root / f"dir{index // FILES_PER_DIRECTORY:03}"
        directory.mkdir(parents=True, exist_ok=True)
        size = generator.randint(*data.small_size)
        (directory / f"file{index:05}.bin").write_bytes(generator.randbytes(size))
        total += size
    for index in range(data.large_files):
        size = generator.randint(*data.large_size)
        (root / f"large{index}.bin").write_bytes(generator.randbytes(size))
        total += size
    return data.small_files + data.large_files, total


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_rsync(source: Path, destination: Path) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one `rsync -a` of source's files into an empty destination."""
    os.sync()
    cpu = children_cpu_seconds()
    started = time.perf_counter()
    subprocess.run(["rsync", "-a", "--exclude=/.git", "--exclude=/.ocsync-folder", f"{source}/", f"{destination}/"],
                   check=True)
    return time.perf_counter() - started, children_cpu_seconds() - cpu


def time_ocsync(scratch: Path, source: Path, run: int) -> dict:
    """One initial sync of `source` to an empty peer; seconds from accept to the same HEAD, and memory."""
    cluster = Cluster(scratch / f"run{run}")
    try:
        alice = cluster.device("alice", start=False)
        bob = cluster.device("bob", start=False)
        alice.ocsync("folder", "add", source, "--name", "bench", timeout=SYNC_TIMEOUT)
        alice.start(timeout=300)
        bob.start()
        pair(alice, bob)
        alice.ocsync("share", "bench", "--with", "bob")
        wait_for_offer(bob, alice, "bench")
        target = cluster.root / "bob-bench"
        target.mkdir()
        source_head = head(source)
        os.sync()
        cpu = [process_cpu_seconds(device.pid) for device in (alice, bob)]
        started = time.perf_counter()
        bob.ocsync("accept", "alice", "bench", "--path", target)
        deadline = started + SYNC_TIMEOUT
        while head(target) != source_head:
            if time.perf_counter() > deadline:
                raise AssertionError(f"bob did not reach alice's head within {SYNC_TIMEOUT:.0f} s\n{cluster.logs()}")
            if not (alice.running and bob.running):
                raise AssertionError(f"a daemon exited during the sync\n{cluster.logs()}")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu_seconds = sum(process_cpu_seconds(device.pid) - before for device, before in zip((alice, bob), cpu))
        memory = {device.name: device.peak_memory_kib() / 1024 for device in (alice, bob)}
        if tree_digests(target) != tree_digests(source):
            raise AssertionError(f"bob reached alice's head but his files differ from hers\n{cluster.logs()}")
        return {"seconds": elapsed, "cpu_seconds": cpu_seconds, "peak_mb": memory}
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each side per data set (medians reported)")
    parser.add_argument("--only", choices=["a", "b"], help="one data set")
    parser.add_argument("--quick", action="store_true", help="smaller data sets, one run each")
    args = parser.parse_args()
    datasets = QUICK if args.quick else FULL
    if args.quick:
        args.runs = 1
    if args.only:
        datasets = [data for data in datasets if data.name == args.only]
    rsync_missing = shutil.which("rsync") is None
    if rsync_missing:
        print("rsync is not installed (`which rsync` finds nothing): timing ocsync alone, no ratios",
              file=sys.stderr)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ocsync-bench-initial-") as scratch_name:
        scratch = Path(scratch_name)
        for data in datasets:
            source = scratch / f"source-{data.name}"
            files, size = make_data(source, data, seed=ord(data.name))
            print(f"data set ({data.name}): {files} files, {size / MB:.0f} MB", flush=True)
            ocsync_runs, rsync_runs, memory_runs, ocsync_cpu, rsync_cpu = [], [], [], [], []
            for run in range(args.runs):
                try:
                    measured = time_ocsync(scratch / data.name, source, run)
                except AssertionError as failure:
                    print(failure, file=sys.stderr)
                    print(json.dumps({"bench": "initial_sync", "error": f"data set ({data.name}): "
                                      + str(failure).splitlines()[0]}))
                    sys.exit(1)
                ocsync_runs.append(measured["seconds"])
                ocsync_cpu.append(measured["cpu_seconds"])
                memory_runs.append(max(measured["peak_mb"].values()))
                line = f"  run {run}: ocsync {measured['seconds']:.2f} s (daemons' CPU {measured['cpu_seconds']:.2f} s), " \
                    "peak daemon memory " + ", ".join(
                    f"{name} {mb:.0f} MB" for name, mb in measured["peak_mb"].items())
                if not rsync_missing:
                    destination = scratch / data.name / f"rsync{run}"
                    wall, cpu_seconds = time_rsync(source, destination)
                    rsync_runs.append(wall)
                    rsync_cpu.append(cpu_seconds)
                    shutil.rmtree(destination)
                    line += f"; rsync -a {wall:.2f} s (CPU {cpu_seconds:.2f} s)"
                print(line, flush=True)
            ocsync_seconds = statistics.median(ocsync_runs)
            rsync_seconds = statistics.median(rsync_runs) if rsync_runs else None
            results[data.name] = {
                "files": files,
                "bytes": size,
                "ocsync_s": round(ocsync_seconds, 3),
                "rsync_s": round(rsync_seconds, 3) if rsync_seconds is not None else None,
                "ratio": round(ocsync_seconds / rsync_seconds, 2) if rsync_seconds else None,
                "goal_ratio": data.goal_ratio,
                "ocsync_cpu_s": round(statistics.median(ocsync_cpu), 3),
                "rsync_cpu_s": round(statistics.median(rsync_cpu), 3) if rsync_cpu else None,
                "peak_daemon_mb": round(max(memory_runs), 1),
                "ocsync_runs_s": [round(value, 3) for value in ocsync_runs],
                "rsync_runs_s": [round(value, 3) for value in rsync_runs],
            }
            shutil.rmtree(scratch / data.name, ignore_errors=True)
            shutil.rmtree(source)

    summary = {"bench": "initial_sync", "quick": args.quick, "runs": args.runs, "goal_peak_mb": MEMORY_GOAL_MB,
               **results}
    if rsync_missing:
        summary["rsync"] = "not installed: no ratios"
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
