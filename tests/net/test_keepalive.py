"""Keepalive cadence and the liveness verdict, at exact fake-clock times."""

import pytest

from ocsync_tui.net import events, frames
from ocsync_tui.net.keepalive import KeepaliveCore, Liveness
from tests.net.fake_link import FakeNetwork, FramePeer, LinkConditions

A, B = ("198.51.100.1", 44996), ("203.0.113.2", 44996)


class KeepalivePeer(FramePeer):
    def receive_datagram(self, data, address, now):
        self.core.receive_frame(data, now)

    def datagrams_to_send(self, now):
        return [(frame, self.peer_address) for frame in self.core.frames_to_send(now)]


def pair(delay=0.01):
    network = FakeNetwork(seed=1, conditions=LinkConditions(delay=delay))
    left = network.attach(KeepalivePeer(KeepaliveCore(b"B" * 32, network.now), B), A)
    right = network.attach(KeepalivePeer(KeepaliveCore(b"A" * 32, network.now), A), B)
    return network, left, right


def ping_times(node):
    return [sent.time for sent in node.sent if sent.data[1] == frames.FrameType.PING]


def test_pings_every_20_seconds_and_each_side_sees_the_other_up():
    network, left, right = pair()
    network.run_for(65)
    assert ping_times(left) == pytest.approx([1000.0, 1020.0, 1040.0, 1060.0])
    pongs = [sent for sent in right.sent if sent.data[1] == frames.FrameType.PONG]
    assert len(pongs) == 4
    assert left.events == [events.PeerUp(b"B" * 32)] and right.events == [events.PeerUp(b"A" * 32)]


def test_peer_down_after_three_silent_intervals_and_up_again_on_return():
    network, left, right = pair()
    network.run_until(lambda: network.now >= 1050, 60)
    network.tap = lambda datagram: datagram.destination != A  # nothing reaches the left side any more
    assert network.run_until(lambda: left.events_of(events.PeerDown), 200)
    # Last heard: the Pong to the 1040 Ping, at 1040.02. Misses counted at 1080, 1100 and 1120.
    [down] = left.events_of(events.PeerDown)
    assert network.now == 1120.0 and down.silent_for == pytest.approx(1120.0 - 1040.02)
    assert left.core.core.liveness is Liveness.DOWN
    network.tap = None
    assert network.run_until(lambda: len(left.events_of(events.PeerUp)) == 2, 30)
    assert network.now == pytest.approx(1120.01), "the peer's own 1120 Ping brings it back"


def test_any_received_frame_counts_as_life():
    core = KeepaliveCore(b"P" * 32, 0.0, interval=10.0, misses_allowed=2)
    assert frames.decode(core.frames_to_send(0.0)[0]).__class__ is frames.Ping
    for now in (9.0, 19.0, 29.0, 39.0):
        core.note_received(now)
        core.handle_timer(now + 1.0)
    assert core.liveness is Liveness.UP and [type(e) for e in iter(core.next_event, None)] == [events.PeerUp]
    core.handle_timer(50.0)
    core.handle_timer(60.0)
    assert isinstance(core.next_event(), events.PeerDown)


def test_garbage_is_ignored():
    core = KeepaliveCore(b"P" * 32, 0.0)
    core.receive_frame(b"\x01", 1.0)
    core.receive_frame(frames.encode_done(1, 2), 1.0)
    assert core.liveness is Liveness.UNKNOWN and core.next_event() is None
