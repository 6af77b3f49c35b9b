"""Loopback UDP I/O options under trio: which way of sending and receiving datagrams is fastest.

Senders (one process) push 1200-byte datagrams for a fixed time to a receiver (another process) that
counts what arrives. Send modes: trio's awaited socket (`await sock.sendto`), the stdlib socket called
directly (`UdpSocket` without GSO) and `UdpSocket` with GSO. Receive modes: trio's awaited `recvfrom`
versus `UdpSocket.receive_batch` (with GRO where the kernel has it).

Usage: python bench/udp_io.py [--seconds 2] [--runs 3]. Last line: JSON with datagrams/s per mode (medians).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time

import trio
import trio.socket

from ocsync_tui.net.udp_socket import open_udp_socket

DATAGRAM = 1200
BATCH = 64


def _receiver(mode: str, port_queue, result_queue, seconds: float) -> None:
    async def main() -> None:
        count = 0
        if mode == "trio":
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            await sock.bind(("127.0.0.1", 0))
            port_queue.put(sock.getsockname()[1])
            with trio.move_on_after(seconds + 2):
                while True:
                    await sock.recvfrom(65535)
                    count += 1
                    if count == 1:
                        start = time.perf_counter()
        else:
            udp = open_udp_socket("127.0.0.1", 0, offload=mode != "batch-nogro")
            port_queue.put(udp.local_address[1])
            with trio.move_on_after(seconds + 2):
                while True:
                    batch = await udp.receive_batch(1024)
                    if count == 0:
                        start = time.perf_counter()
                    count += len(batch)
        result_queue.put(count / max(time.perf_counter() - start, 1e-9))

    trio.run(main)


def _send(mode: str, port: int, seconds: float) -> None:
    async def main() -> None:
        payload = b"\x55" * DATAGRAM
        address = ("127.0.0.1", port)
        deadline = time.perf_counter() + seconds
        if mode == "trio":
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            while time.perf_counter() < deadline:
                for _ in range(BATCH):
                    await sock.sendto(payload, address)
        else:
            udp = open_udp_socket("127.0.0.1", 0, offload=mode == "gso")
            batch = [(payload, address)] * BATCH
            while time.perf_counter() < deadline:
                await udp.send_batch(batch)

    trio.run(main)


def measure(send_mode: str, receive_mode: str, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    port_queue, result_queue = context.Queue(), context.Queue()
    receiver = context.Process(target=_receiver, args=(receive_mode, port_queue, result_queue, seconds))
    receiver.start()
    port = port_queue.get(timeout=10)
    _send(send_mode, port, seconds)
    rate = result_queue.get(timeout=seconds + 10)
    receiver.join(timeout=10)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    combinations = [("trio", "trio"), ("direct", "batch-nogro"), ("direct", "batch"), ("gso", "batch")]
    figures = {}
    for send_mode, receive_mode in combinations:
        rates = [measure(send_mode, receive_mode, arguments.seconds) for _ in range(arguments.runs)]
        name = f"send_{send_mode}__receive_{receive_mode}"
        figures[name] = round(statistics.median(rates))
        print(f"{name}: {figures[name]:,} datagrams/s received (runs: {[round(r) for r in rates]})", flush=True)
    baseline = figures["send_trio__receive_trio"]
    figures["ratios_vs_trio"] = {name: round(value / baseline, 2) for name, value in figures.items() if name != "send_trio__receive_trio"}
    figures["datagram_bytes"] = DATAGRAM
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
