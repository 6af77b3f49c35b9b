"""Transport benchmarks: encrypted transfers against ceilings measured in the same run.

Parts (`--only PART`, repeatable; default all):
  link      the lossy link's own ceiling (datagrams/s it forwards with no impairments)
  ceiling   the encrypted blast ceiling: one process only encrypts and sends, another only receives and
            decrypts (same AEAD, header and datagram size as transfers), no reliability at all
  loopback  goodput of a 256 MB transfer between two endpoints (separate processes) vs the ceiling
  lossy     through the lossy link with 10 ms RTT, 3% loss and reordering vs clean through the same link
  netlab    100 Mbit/s veth between two network namespaces (tc tbf) vs TCP on the same link, and with
            40 ms RTT added by the lossy link vs the link rate (needs root, iproute2)
  memory    peak RSS of the sending process while it sends a 1 GB blob

Every figure is the median of `--runs` runs. The last line printed is one JSON object with all figures.
Processes talk to this script through `--role NAME`: each role prints JSON lines on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import trio
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: `tests.e2e.netlab`

from ocsync_tui.net.codec import TRANSPORT_HEADER, TRANSPORT_HEADER_SIZE, TRANSPORT_OVERHEAD
from ocsync_tui.net.lossy_link import Impairments, LossyLink
from ocsync_tui.net.session import ReplayWindow
from ocsync_tui.net.udp_socket import open_udp_socket
from tests.e2e.netlab import netns_available, tcp_goodput, two_hosts

MB = 1_000_000
BENCH_KEY = bytes(range(32))
TRANSPORT_TYPE = 4
PROTOCOL_VERSION = 1
_NONCE_PREFIX = bytes(4)
_COUNTER = struct.Struct("<Q")


# --- helpers: child processes speaking JSON lines --------------------------------------------------


def start_role(role: str, *arguments: str, netns: str | None = None) -> subprocess.Popen:
    command = [sys.executable, os.path.abspath(__file__), "--role", role, *arguments]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)


def read_report(process: subprocess.Popen) -> dict:
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=5)
        raise RuntimeError(f"role process exited ({process.returncode}) without reporting")
    return json.loads(line)


def report(**figures: object) -> None:
    print(json.dumps(figures), flush=True)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


# --- the encrypted blast ceiling -------------------------------------------------------------------


def seal_transport(aead: ChaCha20Poly1305, counter: int, payload: bytes) -> bytes:
    header = TRANSPORT_HEADER.pack(TRANSPORT_TYPE, PROTOCOL_VERSION, 0, 1, counter)
    return header + aead.encrypt(_NONCE_PREFIX + _COUNTER.pack(counter), payload, None)


async def role_blast_receive(host: str, idle: float) -> None:
    aead = ChaCha20Poly1305(BENCH_KEY)
    window = ReplayWindow()
    with open_udp_socket(host, 0) as udp:
        report(port=udp.local_address[1])
        received = 0
        first = last = 0.0
        while True:
            with trio.move_on_after(idle if received else 60) as quiet:
                batch = await udp.receive_batch(1024)
            if quiet.cancelled_caught:
                break
            for data, _ in batch:
                counter = _COUNTER.unpack_from(data, 8)[0]
                plaintext = aead.decrypt(_NONCE_PREFIX + data[8:TRANSPORT_HEADER_SIZE], data[TRANSPORT_HEADER_SIZE:], None)
                if window.accept(counter):
                    received += len(plaintext)
            last = time.perf_counter()
            if not first:
                first = last
        report(bytes=received, seconds=last - first)


async def role_blast_send(host: str, port: int, total: int, datagram_size: int) -> None:
    aead = ChaCha20Poly1305(BENCH_KEY)
    payload = os.urandom(datagram_size - TRANSPORT_OVERHEAD)
    with open_udp_socket(host, 0) as udp:
        destination = (host, port)
        counter = 0
        sent = 0
        start = time.perf_counter()
        while sent < total:
            batch = []
            for _ in range(64):
                batch.append((seal_transport(aead, counter, payload), destination))
                counter += 1
            sent += 64 * len(payload)
            await udp.send_batch(batch)
        report(bytes=sent, seconds=time.perf_counter() - start)


def measure_blast(host: str, total: int, datagram_size: int, netns: tuple[str, str] | None = None) -> float:
    """Receiver-side goodput (MB/s) of an unreliable encrypted blast."""
    receiver = start_role("blast-receive", host, netns=netns[1] if netns else None)
    port = read_report(receiver)["port"]
    sender = start_role("blast-send", host, str(port), str(total), str(datagram_size), netns=netns[0] if netns else None)
    read_report(sender)
    sender.wait(timeout=60)
    result = read_report(receiver)
    receiver.wait(timeout=10)
    return result["bytes"] / result["seconds"] / MB


# --- the lossy link's own ceiling -------------------------------------------------------------------


async def measure_link_ceiling(seconds: float, datagram_size: int) -> float:
    """Datagrams per second the link forwards with no impairments, sender and receiver in-process."""
    with open_udp_socket("127.0.0.1", 0) as near, open_udp_socket("127.0.0.1", 0) as far:
        link = LossyLink(far.local_address)
        async with trio.open_nursery() as nursery:
            link_address = await nursery.start(link.run)

            async def blast() -> None:
                batch = [(bytes(datagram_size), link_address)] * 64
                while True:
                    await near.send_batch(batch)
                    await trio.sleep(0)

            async def drain() -> None:
                while True:
                    await far.receive_batch(1024)

            nursery.start_soon(blast)
            nursery.start_soon(drain)
            await trio.sleep(0.3)
            before, start = link.forward.counters.forwarded, trio.current_time()
            await trio.sleep(seconds)
            rate = (link.forward.counters.forwarded - before) / (trio.current_time() - start)
            nursery.cancel_scope.cancel()
    return rate


# --- the 100 Mbit/s link between two namespaces --------------------------------------------------

LINK_MBIT = 100
# One bandwidth-delay product at the largest RTT we test (40 ms), and then some.
LINK_QUEUE_BYTES = int(LINK_MBIT * 1_000_000 / 8 * 0.05)


def bench_netlab(arguments: argparse.Namespace) -> dict[str, object]:
    if not netns_available():
        print("netlab: skipped (needs root, iproute2 and network namespaces)", flush=True)
        return {"netlab": "skipped"}
    total = min(arguments.size_mb, 100) * MB
    figures: dict[str, object] = {}
    with two_hosts("bench", rate_mbit=LINK_MBIT, queue_bytes=LINK_QUEUE_BYTES) as lab:
        tcp = [tcp_goodput(lab, total) / MB for _ in range(arguments.runs)]
        figures["netlab_tcp_MBps"] = median(tcp)
        print(f"netlab: TCP {figures['netlab_tcp_MBps']} MB/s over {LINK_MBIT} Mbit/s (runs {tcp})", flush=True)
    return figures


# --- main ------------------------------------------------------------------------------------------


ROLES = {
    "blast-receive": lambda args: role_blast_receive(args[0], 0.5),
    "blast-send": lambda args: role_blast_send(args[0], int(args[1]), int(args[2]), int(args[3])),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=["link", "ceiling", "loopback", "lossy", "netlab", "memory"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--datagram-size", type=int, default=1200)
    parser.add_argument("--role", nargs=argparse.REMAINDER)
    arguments = parser.parse_args()
    if arguments.role:
        role, *role_arguments = arguments.role
        trio.run(ROLES[role], role_arguments)
        return
    parts = arguments.only or ["link", "ceiling", "loopback", "lossy", "netlab", "memory"]
    figures: dict[str, object] = {"runs": arguments.runs, "datagram_size": arguments.datagram_size}
    if "link" in parts:
        rates = [trio.run(measure_link_ceiling, 2.0, arguments.datagram_size) for _ in range(arguments.runs)]
        figures["link_ceiling_datagrams_per_s"] = median(rates)
        figures["link_ceiling_MBps"] = median([rate * arguments.datagram_size / MB for rate in rates])
        print(f"lossy link ceiling: {figures['link_ceiling_MBps']} MB/s", flush=True)
    if "ceiling" in parts or "loopback" in parts:
        rates = [measure_blast("127.0.0.1", arguments.size_mb * MB, arguments.datagram_size) for _ in range(arguments.runs)]
        figures["blast_ceiling_MBps"] = median(rates)
        print(f"encrypted blast ceiling: {figures['blast_ceiling_MBps']} MB/s (runs {rates})", flush=True)
    if "netlab" in parts:
        figures.update(bench_netlab(arguments))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
