"""Path MTU probing over the fake link: the search finds the largest size the path carries, and a
black hole makes it fall back to the base size."""

import pytest

from ocsync_tui.net import events, frames
from ocsync_tui.net.pmtu import BASE_PLPMTU, MAX_PROBES, PathMtuProber
from tests.net.fake_link import FakeNetwork, FramePeer, LinkConditions

A, B = ("198.51.100.1", 44996), ("203.0.113.2", 44996)
OVERHEAD = 32  # what the secure channel adds; the link limit applies to whole datagrams


class ProberPeer(FramePeer):
    def receive_datagram(self, data, address, now):
        self.core.receive_frame(data[OVERHEAD:], now)

    def datagrams_to_send(self, now):
        return [(bytes(OVERHEAD) + frame, self.peer_address) for frame in self.core.frames_to_send(now)]


def path(limit, local_max=65507):
    network = FakeNetwork(seed=1, conditions=LinkConditions(delay=0.02))
    state = {"limit": limit}
    network.tap = lambda datagram: len(datagram.data) <= state["limit"]
    options = dict(local_max=local_max, overhead=OVERHEAD, probe_timeout=0.2, validate_interval=10.0)
    left = network.attach(ProberPeer(PathMtuProber(b"B" * 32, network.now, **options), B), A)
    right = network.attach(ProberPeer(PathMtuProber(b"A" * 32, network.now, **options), A), B)
    return network, left, right, state


def test_search_finds_the_exact_limit_of_the_path():
    network, left, right, _ = path(8000)
    assert network.run_until(lambda: left.core.core._phase.value == "complete", 60)
    assert left.core.core.max_datagram_size == 8000 and right.core.core.max_datagram_size == 8000
    assert left.core.core.max_frame_size == 8000 - OVERHEAD
    sizes = [e.max_datagram_size for e in left.events_of(events.PathMtuChanged)]
    assert sizes == sorted(sizes) and sizes[-1] == 8000, "the confirmed size only grows during a search"
    probes = [len(d.data) for d in left.sent if d.data[OVERHEAD + 1] == frames.FrameType.PMTU_PROBE]
    assert probes[:3] == [65507, 8972, 8952], "the local maximum and the common sizes below it go out at once"
    assert probes.count(65507) == MAX_PROBES, "a size fails after three unanswered probes"
    assert len(probes) < 80


def test_loopback_sized_path_is_confirmed_with_one_probe():
    network, left, _, _ = path(65507)
    network.run_until(lambda: left.core.core._phase.value == "complete", 10)
    assert left.core.core.max_datagram_size == 65507
    assert network.now == pytest.approx(1000.04), "one round trip"


def test_black_hole_falls_back_to_the_base_size():
    network, left, _, state = path(8000)
    network.run_until(lambda: left.core.core._phase.value == "complete", 60)
    state["limit"] = 1500  # the route changed: 8000-byte datagrams vanish
    found_at = network.now
    assert network.run_until(lambda: left.core.core.max_datagram_size == BASE_PLPMTU, 30)
    # Detected by the next validation probe of 8000 (10 s later) going unanswered three times.
    assert network.now == pytest.approx(found_at + 10.0 + MAX_PROBES * 0.2)
    assert network.run_until(lambda: left.core.core._phase.value == "complete", 60)
    assert left.core.core.max_datagram_size == 1500, "and the search starts over"


def test_owner_reported_black_hole_and_local_max_at_base():
    network, left, _, _ = path(8000)
    network.run_until(lambda: left.core.core._phase.value == "complete", 60)
    left.core.core.note_black_hole(network.now)
    assert left.core.core.max_datagram_size == BASE_PLPMTU
    with pytest.raises(ValueError):
        PathMtuProber(b"x" * 32, 0.0, local_max=1000, overhead=0)
    base_only = PathMtuProber(b"x" * 32, 0.0, local_max=BASE_PLPMTU, overhead=0)
    assert base_only.frames_to_send(0.0) == [] and base_only.get_timer() == 600.0


def test_a_path_narrower_than_the_route_is_found_within_a_round_trip():
    network, left, _, _ = path(1500)
    network.run_until(lambda: left.core.core.max_datagram_size == 1472, 1)
    assert network.now == pytest.approx(1000.04), "the Ethernet size was probed beside the local maximum"
    assert network.run_until(lambda: left.core.core._phase.value == "complete", 60)
    assert left.core.core.max_datagram_size == 1500
