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
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nacl.signing
import trio
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: `tests.e2e.netlab`

from ocsync_tui.net.codec import TRANSPORT_HEADER, TRANSPORT_HEADER_SIZE, TRANSPORT_OVERHEAD
from ocsync_tui.net.endpoint import Endpoint
from ocsync_tui.net.events import TransferCancelled, TransferCompleted, TransferFailed, TransferOffered
from ocsync_tui.net.peer_link import PeerLinkSettings
from ocsync_tui.net.lossy_link import Impairments, LossyLink
from ocsync_tui.net.session import ReplayWindow
from ocsync_tui.net.udp_socket import open_udp_socket
from tests.e2e.netlab import TwoHosts, netns_available, tcp_goodput, two_hosts

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


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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


# --- transfers between two endpoints, each in its own process --------------------------------------

SENDER_SEED = bytes([1]) * 32
RECEIVER_SEED = bytes([2]) * 32


def public_key_of(seed: bytes) -> bytes:
    return bytes(nacl.signing.SigningKey(seed).verify_key)


async def role_transfer_receive(host: str, state_dir: str) -> None:
    """Accept every offer from the sender; report goodput from the offer to the verified blob."""
    endpoint = Endpoint(nacl.signing.SigningKey(RECEIVER_SEED), state_dir=Path(state_dir), host=host, port=0)
    endpoint.add_peer(public_key_of(SENDER_SEED))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(endpoint.run)
        report(port=address[1])
        offered_at = cpu_at_offer = 0.0
        async for event in endpoint.events:
            if isinstance(event, TransferOffered):
                offered_at, cpu_at_offer = time.perf_counter(), cpu_seconds()
                endpoint.accept(event.public_key, event.transfer_id)
            elif isinstance(event, TransferCompleted):
                seconds = time.perf_counter() - offered_at
                size = Path(event.path).stat().st_size
                # Keep serving (the giver waits for our Done) until the benchmark ends this process.
                report(bytes=size, seconds=seconds, cpu_seconds=cpu_seconds() - cpu_at_offer)
            elif isinstance(event, TransferFailed):
                report(error=event.reason)
                nursery.cancel_scope.cancel()


async def role_transfer_send(host: str, target_host: str, target_port: str, path: str, state_dir: str) -> None:
    """Send one file to the receiver; report when the receiver confirmed it, and our peak memory."""
    endpoint = Endpoint(nacl.signing.SigningKey(SENDER_SEED), state_dir=Path(state_dir), host=host, port=0)
    endpoint.add_peer(public_key_of(RECEIVER_SEED), (target_host, int(target_port)))
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.run)
        start = time.perf_counter()
        await endpoint.send_blob(public_key_of(RECEIVER_SEED), Path(path))
        cpu_at_offer = cpu_seconds()
        async for event in endpoint.events:
            if isinstance(event, TransferCompleted | TransferFailed | TransferCancelled):
                report(
                    ok=isinstance(event, TransferCompleted),
                    seconds=time.perf_counter() - start,
                    cpu_seconds=cpu_seconds() - cpu_at_offer,
                    max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                )
                nursery.cancel_scope.cancel()


async def role_link(far_host: str, far_port: str, loss: str, delay: str, reorder: str) -> None:
    """A lossy link in its own process; the delay is one-way (half the added round trip)."""
    impairments = Impairments(loss=float(loss), delay=float(delay), reorder=float(reorder),
                              reorder_delay=max(float(delay) / 4, 0.001))
    link = LossyLink((far_host, int(far_port)), impairments, seed=1, host="0.0.0.0")
    async with trio.open_nursery() as nursery:
        address = await nursery.start(link.run)
        report(port=address[1])
        await trio.sleep_forever()


def make_blob(directory: Path, size: int) -> Path:
    path = directory / f"blob-{size}"
    if not path.exists():
        with open(path, "wb") as stream:
            block = os.urandom(1 << 20)
            for offset in range(0, size, len(block)):
                stream.write(block[: min(len(block), size - offset)])
    return path


def measure_transfer(
    path: Path,
    work: Path,
    *,
    link: tuple[float, float, float] | None = None,
    lab: TwoHosts | None = None,
) -> dict:
    """One transfer of `path` sender → receiver, on loopback or left → right in `lab`.

    link = (loss, one-way delay, reorder probability) puts a lossy link, in the sender's namespace, in
    front of the receiver."""
    run_dir = Path(tempfile.mkdtemp(dir=work))
    receiver_host = lab.right.address if lab else "127.0.0.1"
    sender_host = lab.left.address if lab else "127.0.0.1"
    sender_ns = lab.left.namespace if lab else None
    processes = []
    try:
        receiver = start_role("transfer-receive", receiver_host, str(run_dir / "receiver"),
                              netns=lab.right.namespace if lab else None)
        processes.append(receiver)
        target = (receiver_host, read_report(receiver)["port"])
        if link is not None:
            link_process = start_role("link", *map(str, target), *map(str, link), netns=sender_ns)
            processes.append(link_process)
            target = ("127.0.0.1", read_report(link_process)["port"])
            sender_host = "127.0.0.1"
        sender = start_role("transfer-send", sender_host, *map(str, target), str(path), str(run_dir / "sender"),
                            netns=sender_ns)
        processes.append(sender)
        received = read_report(receiver)
        sent = read_report(sender)
        if "error" in received or not sent.get("ok"):
            raise RuntimeError(f"transfer failed: {received} {sent}")
        return {
            "MBps": received["bytes"] / received["seconds"] / MB,
            "max_rss_mb": sent["max_rss_mb"],
            # CPU busy fraction of each side while the transfer ran: which one is the bottleneck.
            "receiver_cpu": received["cpu_seconds"] / received["seconds"],
            "sender_cpu": sent["cpu_seconds"] / received["seconds"],
        }
    finally:
        for process in processes:
            process.kill()
            process.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


def bench_transfers(arguments: argparse.Namespace, parts: list[str], figures: dict, work: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    size = arguments.size_mb * MB
    if "loopback" in parts:
        blob = make_blob(work, size)
        measured = [measure_transfer(blob, work) for _ in range(arguments.runs)]
        runs = [result["MBps"] for result in measured]
        results["loopback_MBps"] = median(runs)
        results["loopback_receiver_cpu"] = median([result["receiver_cpu"] for result in measured])
        results["loopback_sender_cpu"] = median([result["sender_cpu"] for result in measured])
        results["loopback_vs_ceiling"] = round(results["loopback_MBps"] / figures["blast_ceiling_MBps"], 3)
        print(f"loopback transfer: {results['loopback_MBps']} MB/s (runs {runs}); CPU busy: receiver "
              f"{results['loopback_receiver_cpu']:.0%}, sender {results['loopback_sender_cpu']:.0%}", flush=True)
    if "lossy" in parts:
        blob = make_blob(work, min(size, 64 * MB))
        clean = [measure_transfer(blob, work, link=(0.0, 0.005, 0.0))["MBps"] for _ in range(arguments.runs)]
        lossy = [measure_transfer(blob, work, link=(0.03, 0.005, 0.02))["MBps"] for _ in range(arguments.runs)]
        results["lossy_link_clean_MBps"] = median(clean)
        results["lossy_link_3pct_MBps"] = median(lossy)
        results["lossy_vs_clean"] = round(median(lossy) / median(clean), 3)
        print(f"through the link, 10 ms RTT: clean {clean}, 3% loss + reordering {lossy} MB/s", flush=True)
    if "memory" in parts:
        blob = make_blob(work, 1000 * MB)
        result = measure_transfer(blob, work)
        results["memory_1GB_sender_max_rss_MB"] = round(result["max_rss_mb"], 1)
        results["memory_1GB_MBps"] = round(result["MBps"], 2)
        print(f"1 GB: sender peak RSS {results['memory_1GB_sender_max_rss_MB']} MB", flush=True)
    return results


# --- the 100 Mbit/s link between two namespaces --------------------------------------------------

LINK_MBIT = 100
# One bandwidth-delay product at the largest RTT we test (40 ms), and then some.
LINK_QUEUE_BYTES = int(LINK_MBIT * 1_000_000 / 8 * 0.05)


def bench_netlab(arguments: argparse.Namespace, work: Path) -> dict[str, object]:
    if not netns_available():
        print("netlab: skipped (needs root, iproute2 and network namespaces)", flush=True)
        return {"netlab": "skipped"}
    size = min(arguments.size_mb, 100) * MB
    link_rate_MBps = LINK_MBIT * 1_000_000 / 8 / MB
    figures: dict[str, object] = {"netlab_link_MBps": link_rate_MBps}
    with two_hosts("bench", rate_mbit=LINK_MBIT, queue_bytes=LINK_QUEUE_BYTES) as lab:
        blob = make_blob(work, size)
        tcp = [tcp_goodput(lab, size) / MB for _ in range(arguments.runs)]
        ours = [measure_transfer(blob, work, lab=lab)["MBps"] for _ in range(arguments.runs)]
        delayed = [measure_transfer(blob, work, lab=lab, link=(0.0, 0.020, 0.0))["MBps"] for _ in range(arguments.runs)]
    figures["netlab_tcp_MBps"] = median(tcp)
    figures["netlab_ocsync_MBps"] = median(ours)
    figures["netlab_ocsync_vs_tcp"] = round(median(ours) / median(tcp), 3)
    figures["netlab_40ms_MBps"] = median(delayed)
    figures["netlab_40ms_vs_link_rate"] = round(median(delayed) / link_rate_MBps, 3)
    print(f"netlab {LINK_MBIT} Mbit/s: TCP {tcp}, ocsync {ours}, ocsync +40 ms RTT {delayed} MB/s", flush=True)
    return figures


# --- main ------------------------------------------------------------------------------------------


ROLES = {
    "transfer-receive": lambda args: role_transfer_receive(args[0], args[1]),
    "transfer-send": lambda args: role_transfer_send(*args),
    "link": lambda args: role_link(*args),
    "blast-receive": lambda args: role_blast_receive(args[0], 0.5),
    "blast-send": lambda args: role_blast_send(args[0], int(args[1]), int(args[2]), int(args[3])),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=["link", "ceiling", "loopback", "lossy", "netlab", "memory"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=256)
    # What path MTU probing settles on over loopback: the peer link's cap.
    parser.add_argument("--datagram-size", type=int, default=PeerLinkSettings().max_datagram_size)
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
    work = Path(tempfile.mkdtemp(prefix="ocsync-bench-"))
    try:
        figures.update(bench_transfers(arguments, parts, figures, work))
        if "netlab" in parts:
            figures.update(bench_netlab(arguments, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
