"""Propagation benchmark: how long a single-file edit takes to appear on a peer, with two real daemons.

Two `ocsync daemon` processes on loopback (tests/e2e/daemons.py starts them, pairs them and shares one
folder). Then N single-file edits, `--interval` seconds apart, alternating between the two devices and
rotating over a few files (new files first, then edits of them); each edit is timed from just before
the write until the peer's copy of the file has exactly the new content (polled every millisecond).
An edit not seen within `--timeout` seconds counts as that timeout.

Goal: p50 <= 0.5 s, p95 <= 1 s (Syncthing 1.19 on this kind of machine: p50 10 s by default, 1.04 s at
its lowest setting). The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: `tests.e2e.daemons`

from tests.e2e.daemons import Cluster, pair, share_folder, wait_converged  # noqa: E402

FILES_ROTATED = 5


def nearest_rank(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def seen_after(path: Path, content: bytes, started: float, timeout: float) -> float | None:
    """Seconds from `started` until `path` holds `content`, or None after `timeout`."""
    deadline = started + timeout
    while True:
        try:
            if path.read_bytes() == content:
                return time.perf_counter() - started
        except FileNotFoundError:
            pass
        if time.perf_counter() > deadline:
            return None
        time.sleep(0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between edits")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds before an edit counts as lost")
    parser.add_argument("--quick", action="store_true", help="10 edits 1 s apart")
    args = parser.parse_args()
    if args.quick:
        args.edits, args.interval = 10, 1.0

    with tempfile.TemporaryDirectory(prefix="ocsync-bench-propagation-") as scratch:
        cluster = Cluster(Path(scratch))
        try:
            alice, bob = cluster.device("alice"), cluster.device("bob")
            pair(alice, bob)
            paths = share_folder(alice, "bench", Path(scratch) / "alice-bench", bob)
            wait_converged(paths, expected={})
            devices = [alice, bob]
            samples: list[float] = []
            timeouts = 0
            for index in range(args.edits):
                writer, reader = devices[index % 2], devices[(index + 1) % 2]
                name = f"file{index % FILES_ROTATED}.txt"
                content = f"edit {index} by {writer.name} at {time.time():.6f}\n".encode() * 8
                started = time.perf_counter()
                (paths[writer] / name).write_bytes(content)
                elapsed = seen_after(paths[reader] / name, content, started, args.timeout)
                if elapsed is None:
                    timeouts += 1
                    elapsed = args.timeout
                samples.append(elapsed)
                print(f"edit {index:2} {writer.name:>5} -> {reader.name:<5} {elapsed * 1000:8.1f} ms", flush=True)
                time.sleep(max(0.0, args.interval - elapsed))
            wait_converged(paths, timeout=30)
        except AssertionError as failure:
            print(failure, file=sys.stderr)
            print(json.dumps({"bench": "propagation", "error": str(failure).splitlines()[0]}))
            sys.exit(1)
        finally:
            cluster.close()

    print(json.dumps({
        "bench": "propagation",
        "edits": args.edits,
        "interval_s": args.interval,
        "p50_s": round(statistics.median(samples), 4),
        "p95_s": round(nearest_rank(samples, 0.95), 4),
        "max_s": round(max(samples), 4),
        "timeouts": timeouts,
        "goal_p50_s": 0.5,
        "goal_p95_s": 1.0,
        "samples_s": [round(sample, 4) for sample in samples],
    }))


if __name__ == "__main__":
    main()
