"""CPU cost of the transfer core alone: two TransferManagers in one process, no crypto, no sockets.

A giver sends an in-memory blob to a taker that writes it to a partial file (real disk writes and
SHA-256, as in production); frames pass by direct calls under the real clock. The figure is the CPU
time spent inside the two cores per Data frame (the loop's own polling, idle while pacing holds the
giver back, is not counted), so frames/s is what the cores could carry with the CPU to themselves;
wall-clock goodput is reported too. Baseline, measured in the same run: the same number of Data
frames only encoded (header + source read) and decoded, the floor any transfer core pays.

Usage: python bench/transfer_core.py [--megabytes 64] [--frame 1200] [--runs 3].
Last line: JSON with medians (frames/s, MB/s, µs per frame) and the ratio to the codec-only baseline.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from ocsync_tui.net import events, frames
from ocsync_tui.net.blob_source import BytesBlobSource
from ocsync_tui.net.partial_store import PartialStore
from ocsync_tui.net.transfer import TransferManager


def run_transfer(data: bytes, frame_size: int, directory: Path) -> tuple[float, float, int]:
    """Return (wall-clock seconds, seconds inside the cores, Data frames sent)."""
    giver = TransferManager(b"T" * 32, PartialStore(directory / "giver"))
    taker = TransferManager(b"G" * 32, PartialStore(directory / "taker"))
    clock = time.perf_counter
    start = clock()
    giver.offer(BytesBlobSource(data), start)
    data_frames = 0
    inside = 0.0
    completed = False
    while not completed:
        now = clock()
        outgoing = giver.frames_to_send(now, frame_size)
        for frame in outgoing:
            taker.receive_frame(frame, clock())
        returning = taker.frames_to_send(clock(), frame_size)
        after = clock()
        for frame in returning:
            giver.receive_frame(frame, after)
        for core in (giver, taker):
            timer = core.get_timer()
            if timer is not None and timer <= after:
                core.handle_timer(after)
            while (event := core.next_event()) is not None:
                if isinstance(event, events.TransferOffered):
                    taker.accept(event.transfer_id, after)
                elif isinstance(event, events.TransferCompleted) and event.outgoing:
                    completed = True
        if outgoing or returning:
            inside += clock() - now
            data_frames += sum(frame[1] == frames.FrameType.DATA for frame in outgoing)
    elapsed = clock() - start
    received = next((directory / "taker").glob("*.blob")).read_bytes()
    assert received == data, "the benchmark transfer must be byte-identical"
    return elapsed, inside, data_frames


def run_codec_only(data: bytes, frame_size: int, frame_count: int) -> float:
    source = BytesBlobSource(data)
    payload = frame_size - frames.DATA_OVERHEAD
    start = time.perf_counter()
    offset = 0
    for packet_number in range(frame_count):
        length = min(payload, len(data) - offset) or payload
        frame = frames.encode_data_header(packet_number, 1, offset) + source.read(offset % len(data), length)
        frames.decode(frame)
        offset = (offset + length) % len(data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--frame", type=int, default=1200)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    data = random.Random(1).randbytes(arguments.megabytes << 20)
    core_rates, codec_rates, goodputs = [], [], []
    for run in range(arguments.runs):
        with tempfile.TemporaryDirectory() as directory:
            elapsed, inside, data_frames = run_transfer(data, arguments.frame, Path(directory))
        codec_elapsed = run_codec_only(data, arguments.frame, data_frames)
        core_rates.append(data_frames / inside)
        codec_rates.append(data_frames / codec_elapsed)
        goodputs.append(len(data) / elapsed / 1e6)
        print(f"run {run + 1}: {core_rates[-1]:,.0f} frames per core-second; wall clock {goodputs[-1]:.1f} MB/s; "
              f"codec only {codec_rates[-1]:,.0f} frames/s", flush=True)
    core, codec = statistics.median(core_rates), statistics.median(codec_rates)
    print(json.dumps({
        "frame_bytes": arguments.frame,
        "blob_megabytes": arguments.megabytes,
        "core_frames_per_cpu_s": round(core),
        "core_mb_per_cpu_s": round(core * (arguments.frame - frames.DATA_OVERHEAD) / 1e6, 1),
        "core_us_per_frame_both_sides": round(1e6 / core, 2),
        "wall_clock_goodput_mb_per_s": round(statistics.median(goodputs), 1),
        "codec_only_frames_per_s": round(codec),
        "ratio_core_to_codec_only": round(core / codec, 3),
    }))


if __name__ == "__main__":
    main()
