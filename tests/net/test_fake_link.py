"""The fake link itself must be deterministic and apply what it promises, or core tests prove nothing."""

import pytest

from tests.net.fake_link import FakeNetwork, LinkConditions


class Pinger:
    """Sends `count` numbered datagrams one per `interval` to `peer`; records what it receives."""

    def __init__(self, peer, count=0, interval=0.1, start=1000.0):
        self.peer, self.count, self.interval = peer, count, interval
        self.next_send = start if count else None
        self.outbox: list[bytes] = []
        self.inbox: list[tuple[bytes, tuple, float]] = []

    def receive_datagram(self, data, address, now):
        self.inbox.append((data, address, now))

    def datagrams_to_send(self, now):
        out, self.outbox = self.outbox, []
        return [(data, self.peer) for data in out]

    def get_timer(self):
        return self.next_send

    def handle_timer(self, now):
        self.outbox.append(b"%08d" % (self.count,))
        self.count -= 1
        self.next_send = now + self.interval if self.count else None


A, B = ("198.51.100.1", 1), ("203.0.113.2", 2)


def run(seed, conditions, count=200, interval=0.1):
    network = FakeNetwork(seed=seed, conditions=conditions)
    sender = network.attach(Pinger(B, count, interval), A)
    receiver = network.attach(Pinger(A), B)
    network.run_for(100.0)
    return sender, receiver


def test_clean_link_delivers_in_order_after_exact_delay():
    _, receiver = run(1, LinkConditions(delay=0.25))
    inbox = receiver.core.inbox
    assert [data for data, _, _ in inbox] == [b"%08d" % n for n in range(200, 0, -1)]
    assert inbox[0][2] == 1000.25 and inbox[1][2] == 1000.35
    assert all(address == A for _, address, _ in inbox)


def test_impairments_are_seeded_and_applied():
    conditions = LinkConditions(loss=0.2, duplicate=0.2, corrupt=0.2, jitter=0.5)
    first = [data for data, _, _ in run(7, conditions)[1].core.inbox]
    again = [data for data, _, _ in run(7, conditions)[1].core.inbox]
    other = [data for data, _, _ in run(8, conditions)[1].core.inbox]
    assert first == again and first != other
    sent = {b"%08d" % n for n in range(1, 201)}
    assert len(set(first) & sent) < 200, "some loss or corruption"
    assert len(first) != len(set(first)) or len(first) > 200 - 60, "duplicates appear"
    assert any(data not in sent for data in first), "corruption appears"
    intact = [data for data in first if data in sent]
    assert intact != sorted(intact, reverse=True), "jitter reorders"


def test_rate_limit_spaces_arrivals():
    _, receiver = run(1, LinkConditions(delay=0.0, rate=80.0), count=3, interval=0.01)
    times = [when for _, _, when in receiver.core.inbox]
    assert times == pytest.approx([1000.1, 1000.2, 1000.3])


def test_move_changes_source_address():
    network = FakeNetwork()
    sender = network.attach(Pinger(B, 2, interval=1.0), A)
    receiver = network.attach(Pinger(A), B)
    network.run_until(lambda: len(receiver.core.inbox) == 1, 10)
    network.move(sender, ("198.51.100.9", 9))
    assert network.run_until(lambda: len(receiver.core.inbox) == 2, 10)
    assert [address for _, address, _ in receiver.core.inbox] == [A, ("198.51.100.9", 9)]
