"""A two-host network lab: two Linux network namespaces joined by a veth pair, optionally shaped.

    with two_hosts("bench", rate_mbit=100, queue_bytes=625_000) as lab:
        lab.right.popen([...])                   # a process inside the right namespace
        lab.left.run(["ip", "addr"])             # a command inside the left one
        tcp_goodput(lab, 50_000_000)             # bytes/s of one TCP stream left → right

Addresses come from the documentation range 198.51.100.0/24 (left .1, right .2), so no traffic can
leave the machine. Shaping is `tc tbf` on both veth ends (rate, a burst of a few packets, a queue of
`queue_bytes` — give it at least one bandwidth-delay product); this kernel has no netem, so delay and
loss come from the user-space lossy link instead.

Namespaces are named `ocsnl-<pid>-<name>-left/right` and always deleted on exit (deleting a namespace
deletes its veth end). `cleanup_leftovers()` deletes those a dead process left behind, and only those:
other labs on the machine, or this lab in a live process, are never touched.

Needs root and iproute2; `netns_available()` says whether this machine can build the lab.
Run as a module for the TCP baseline roles: `python -m tests.e2e.netlab tcp-receive|tcp-send ...`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PREFIX = "ocsnl"
LEFT_ADDRESS = "198.51.100.1"
RIGHT_ADDRESS = "198.51.100.2"
_REPOSITORY = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Host:
    namespace: str
    interface: str
    address: str

    def command(self, arguments: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *arguments]

    def run(self, arguments: Sequence[str], **options) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(arguments), check=True, capture_output=True, text=True, **options)

    def popen(self, arguments: Sequence[str], **options) -> subprocess.Popen:
        return subprocess.Popen(self.command(arguments), **options)


@dataclass(frozen=True)
class TwoHosts:
    left: Host
    right: Host


def _ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True, capture_output=True, text=True)


def netns_available() -> bool:
    """True when we may create namespaces, veth pairs and tbf qdiscs here (root, iproute2, kernel)."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        return False
    try:
        with two_hosts("probe", rate_mbit=10):
            return True
    except (subprocess.CalledProcessError, OSError):
        return False


def _owner_alive(name: str) -> bool:
    parts = name.split("-")
    try:
        pid = int(parts[1])
    except (IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_leftovers() -> list[str]:
    """Delete lab namespaces whose creating process is gone; returns their names."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    removed = []
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX + "-") and not _owner_alive(name):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
            removed.append(name)
    return removed


def _shape(host: Host, rate_mbit: float, queue_bytes: int) -> None:
    # A burst of ~10 full-size packets: enough for the kernel timer's granularity, small enough to shape.
    burst = max(15_000, int(rate_mbit * 1_000_000 / 8 / 1000))
    host.run(["tc", "qdisc", "add", "dev", host.interface, "root", "tbf", "rate", f"{rate_mbit}mbit",
              "burst", str(burst), "limit", str(queue_bytes)])


@contextmanager
def two_hosts(
    name: str, *, rate_mbit: float | None = None, queue_bytes: int | None = None
) -> Iterator[TwoHosts]:
    """Build the lab; delete it on exit whatever happens. Default queue: one BDP at 50 ms RTT."""
    cleanup_leftovers()
    token = f"{PREFIX}-{os.getpid()}-{name}"
    left = Host(f"{token}-left", f"{PREFIX}{os.getpid() % 100000}{name[:2]}l", LEFT_ADDRESS)
    right = Host(f"{token}-right", f"{PREFIX}{os.getpid() % 100000}{name[:2]}r", RIGHT_ADDRESS)
    created: list[str] = []
    try:
        for host in (left, right):
            _ip("netns", "add", host.namespace)
            created.append(host.namespace)
        _ip("link", "add", left.interface, "type", "veth", "peer", "name", right.interface)
        for host in (left, right):
            _ip("link", "set", host.interface, "netns", host.namespace)
            host.run(["ip", "addr", "add", f"{host.address}/24", "dev", host.interface])
            host.run(["ip", "link", "set", host.interface, "up"])
            host.run(["ip", "link", "set", "lo", "up"])
            if rate_mbit is not None:
                bdp_50ms = int(rate_mbit * 1_000_000 / 8 * 0.05)
                _shape(host, rate_mbit, queue_bytes or bdp_50ms)
        yield TwoHosts(left, right)
    finally:
        for namespace in created:
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
        # A veth created but not yet moved lives in our namespace; deleting one end deletes both.
        subprocess.run(["ip", "link", "delete", left.interface], capture_output=True)


def module_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "tests.e2e.netlab", *arguments]


def tcp_goodput(lab: TwoHosts, total_bytes: int, *, timeout: float = 120) -> float:
    """Bytes per second of one TCP stream carrying `total_bytes` from left to right (receiver's clock)."""
    receiver = lab.right.popen(module_command("tcp-receive", lab.right.address), stdout=subprocess.PIPE,
                               text=True, cwd=_REPOSITORY)
    try:
        port = json.loads(receiver.stdout.readline())["port"]
        lab.left.run(module_command("tcp-send", lab.right.address, str(port), str(total_bytes)),
                     cwd=_REPOSITORY, timeout=timeout)
        result = json.loads(receiver.stdout.readline())
    finally:
        receiver.kill()
        receiver.wait()
    return result["bytes"] / result["seconds"]


def _tcp_receive(host: str) -> None:
    with socket.create_server((host, 0)) as server:
        print(json.dumps({"port": server.getsockname()[1]}), flush=True)
        connection, _ = server.accept()
        buffer = bytearray(1 << 20)
        received = 0
        with connection:
            start = None
            while count := connection.recv_into(buffer):
                start = start or time.perf_counter()
                received += count
        print(json.dumps({"bytes": received, "seconds": time.perf_counter() - (start or 0)}), flush=True)


def _tcp_send(host: str, port: int, total: int) -> None:
    chunk = os.urandom(1 << 20)
    with socket.create_connection((host, port)) as connection:
        sent = 0
        while sent < total:
            piece = chunk[: min(len(chunk), total - sent)]
            connection.sendall(piece)
            sent += len(piece)


if __name__ == "__main__":
    role, *role_arguments = sys.argv[1:]
    if role == "tcp-receive":
        _tcp_receive(role_arguments[0])
    elif role == "tcp-send":
        _tcp_send(role_arguments[0], int(role_arguments[1]), int(role_arguments[2]))
    else:
        raise SystemExit(f"unknown role {role!r}")
