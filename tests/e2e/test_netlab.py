import os
import subprocess

import pytest

from tests.e2e.netlab import PREFIX, cleanup_leftovers, netns_available, tcp_goodput, two_hosts

pytestmark = pytest.mark.skipif(not netns_available(), reason="needs root, iproute2 and network namespaces")


def namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def test_hosts_reach_each_other_and_the_lab_is_gone_afterwards() -> None:
    with two_hosts("reach") as lab:
        assert {lab.left.namespace, lab.right.namespace} <= namespaces()
        assert tcp_goodput(lab, 1_000_000) > 0
    assert not {lab.left.namespace, lab.right.namespace} & namespaces()


def test_the_lab_is_deleted_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError):
        with two_hosts("raise") as lab:
            raise RuntimeError("boom")
    assert not {lab.left.namespace, lab.right.namespace} & namespaces()


def test_tbf_caps_the_rate() -> None:
    # Unshaped, loopback-speed veth moves 2 MB in milliseconds; shaped to 8 Mbit/s it takes about 2 s.
    with two_hosts("shape", rate_mbit=8, queue_bytes=100_000) as lab:
        assert tcp_goodput(lab, 2_000_000) < 1.5 * 8_000_000 / 8


def test_cleanup_removes_only_labs_of_dead_processes() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = f"{PREFIX}-{dead.pid}-orphan-left"
    alive = f"{PREFIX}-{os.getpid()}-alive-left"
    for name in (orphan, alive):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert orphan in cleanup_leftovers()
        assert alive in namespaces() and orphan not in namespaces()
    finally:
        for name in (orphan, alive):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
