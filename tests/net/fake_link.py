"""A seeded, in-memory network between sans-I/O cores, under a fake clock.

Cores are driven exactly as a trio driver would drive them: datagrams they want to send are collected
with `datagrams_to_send(now)`, carried by the network (which may drop, duplicate, delay, reorder,
corrupt or rate-limit them, deterministically from its seed), handed to the destination's
`receive_datagram(data, source, now)`; timers fire through `get_timer()` / `handle_timer(now)`. Events
from `next_event()` are collected into `Node.events`. Time only moves when nothing is left to do now,
so timer deadlines can be asserted exactly.

Cores that speak in frames to a single peer (no addresses) are attached through `FramePeer`.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Address = tuple[str, int]


class DatagramCore(Protocol):
    def receive_datagram(self, data: bytes, address: Address, now: float) -> Any: ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class LinkConditions:
    """Impairments applied to every datagram, each decided independently from the network's seed."""

    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    delay: float = 0.010
    # Extra delay drawn uniformly from [0, jitter): datagrams overtake each other (reordering).
    jitter: float = 0.0
    # Bytes per second on each direction of each path; None means unlimited.
    rate: float | None = None
    # Bytes that may wait for the rate limiter before tail drop.
    queue_bytes: int = 1 << 20


@dataclass(frozen=True)
class SentDatagram:
    time: float
    source: Address
    destination: Address
    data: bytes


@dataclass
class Node:
    core: Any
    address: Address
    events: list[Any] = field(default_factory=list)
    sent: list[SentDatagram] = field(default_factory=list)
    received: list[SentDatagram] = field(default_factory=list)

    def events_of(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


class FramePeer:
    """Adapts a frame core (`frames_to_send(now, max_frame_size)`, `receive_frame(frame, now)`) that
    talks to exactly one peer into a datagram core for the network."""

    def __init__(self, core: Any, peer_address: Address, max_frame_size: int = 1200) -> None:
        self.core = core
        self.peer_address = peer_address
        self.max_frame_size = max_frame_size

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        self.core.receive_frame(data, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return [(frame, self.peer_address) for frame in self.core.frames_to_send(now, self.max_frame_size)]

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)

    def next_event(self) -> Any:
        return self.core.next_event()


class FakeNetwork:
    """Carries datagrams between attached nodes by destination address; unknown destinations drop."""

    def __init__(
        self, seed: int = 0, conditions: LinkConditions | None = None, clock: FakeClock | None = None
    ) -> None:
        self.random = random.Random(seed)
        self.conditions = conditions or LinkConditions()
        self.clock = clock or FakeClock()
        self.nodes: dict[Address, Node] = {}
        self._in_flight: list[tuple[float, int, SentDatagram]] = []
        self._sequence = itertools.count()
        self._path_busy_until: dict[tuple[Address, Address], float] = {}
        # Optional hook: called with each datagram as it is delivered; return False to drop it.
        self.tap: Callable[[SentDatagram], bool] | None = None

    @property
    def now(self) -> float:
        return self.clock.now

    def attach(self, core: Any, address: Address) -> Node:
        node = Node(core, address)
        self.nodes[address] = node
        return node

    def move(self, node: Node, new_address: Address) -> None:
        """The node's source address changes (NAT rebinding, roaming); replies to the old one are lost."""
        del self.nodes[node.address]
        node.address = new_address
        self.nodes[new_address] = node

    def inject(self, data: bytes, source: Address, destination: Address, delay: float = 0.0) -> None:
        """Put a datagram on the wire as an attacker would: no impairments applied."""
        self._schedule(SentDatagram(self.now, source, destination, data), self.now + delay)

    def run_until(self, condition: Callable[[], bool], max_time: float, max_steps: int = 1_000_000) -> bool:
        """Drive all nodes until condition() holds (True) or `max_time` simulated seconds pass (False)."""
        deadline = self.now + max_time
        for _ in range(max_steps):
            self._flush()
            if condition():
                return True
            next_time = self._next_time()
            if next_time is None or next_time > deadline:
                self.clock.now = max(self.now, deadline)
                return condition()
            self.clock.now = max(self.now, next_time)
            self._deliver_due()
            self._fire_due_timers()
        raise AssertionError(f"run_until made {max_steps} steps without reaching its condition: a busy loop?")

    def run_for(self, seconds: float) -> None:
        self.run_until(lambda: False, seconds)

    def _flush(self) -> None:
        for node in list(self.nodes.values()):
            for data, destination in node.core.datagrams_to_send(self.now):
                datagram = SentDatagram(self.now, node.address, destination, bytes(data))
                node.sent.append(datagram)
                self._transmit(datagram)
            next_event = getattr(node.core, "next_event", None)
            if next_event is not None:
                while (event := next_event()) is not None:
                    node.events.append(event)

    def _transmit(self, datagram: SentDatagram) -> None:
        conditions = self.conditions
        if self.random.random() < conditions.loss:
            return
        copies = 2 if self.random.random() < conditions.duplicate else 1
        for _ in range(copies):
            data = datagram.data
            if data and self.random.random() < conditions.corrupt:
                position = self.random.randrange(len(data))
                flipped = data[position] ^ (1 << self.random.randrange(8))
                data = data[:position] + bytes([flipped]) + data[position + 1 :]
            departure = self.now
            if conditions.rate is not None:
                path = (datagram.source, datagram.destination)
                busy_until = max(self._path_busy_until.get(path, self.now), self.now)
                if (busy_until - self.now) * conditions.rate > conditions.queue_bytes:
                    continue
                departure = busy_until + len(data) / conditions.rate
                self._path_busy_until[path] = departure
            arrival = departure + conditions.delay + self.random.random() * conditions.jitter
            self._schedule(SentDatagram(datagram.time, datagram.source, datagram.destination, data), arrival)

    def _schedule(self, datagram: SentDatagram, arrival: float) -> None:
        heapq.heappush(self._in_flight, (arrival, next(self._sequence), datagram))

    def _next_time(self) -> float | None:
        times = [timer for node in self.nodes.values() if (timer := node.core.get_timer()) is not None]
        if self._in_flight:
            times.append(self._in_flight[0][0])
        return min(times, default=None)

    def _deliver_due(self) -> None:
        while self._in_flight and self._in_flight[0][0] <= self.now:
            _, _, datagram = heapq.heappop(self._in_flight)
            node = self.nodes.get(datagram.destination)
            if node is None or (self.tap is not None and not self.tap(datagram)):
                continue
            node.received.append(datagram)
            node.core.receive_datagram(datagram.data, datagram.source, self.now)

    def _fire_due_timers(self) -> None:
        for node in list(self.nodes.values()):
            timer = node.core.get_timer()
            if timer is not None and timer <= self.now:
                node.core.handle_timer(self.now)
