"""A user-space lossy link: a seeded UDP forwarder for tests and benchmarks (this kernel has no netem).

The link sits between two UDP endpoints. The *near* side talks to the link's listening address as if
it were the far peer; the link forwards from a second socket of its own, so the *far* peer sees the
link as the near peer and its replies come back the same way (like a one-client NAT). Each direction
applies its own `Impairments`, deciding every datagram's fate from a seeded random stream:

- loss, duplication, corruption (one bit flipped) — each an independent probability;
- delay (fixed) plus jitter (uniform in [0, jitter)), and reordering: with probability `reorder` a
  datagram is held back an extra `reorder_delay` so the ones behind it overtake it;
- a bandwidth limit: a FIFO queue drained at `rate` bytes/s that drops arrivals once `queue_bytes`
  wait in it (tail drop, as a router does).

The decisions depend only on the seed and the order datagrams arrive in; when they are delivered
depends on the real clock. Datagrams go out in batches through `UdpSocket` (GSO/GRO), so the link is
faster than the transfers it carries (`bench/transfer.py --only link` measures its ceiling).

    link = LossyLink(far_address, Impairments(loss=0.03, delay=0.005), seed=1)
    near_side = await nursery.start(link.run)   # send here to reach far_address
    ... link.forward.counters, link.backward.counters
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ocsync_tui.net.udp_socket import Address, UdpSocket, open_udp_socket


@dataclass(frozen=True)
class Impairments:
    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.002
    delay: float = 0.0
    jitter: float = 0.0
    # Bytes per second; None = as fast as the link's own sockets go.
    rate: float | None = None
    queue_bytes: int = 1 << 20


@dataclass
class LinkCounters:
    received: int = 0
    forwarded: int = 0
    forwarded_bytes: int = 0
    lost: int = 0
    queue_dropped: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0


@dataclass
class Direction:
    """One direction of the link: its impairments (replaceable at any time), its randomness, counters,
    and the datagrams on their way as a heap of (delivery time, order, bytes)."""

    impairments: Impairments
    random: random.Random
    counters: LinkCounters = field(default_factory=LinkCounters)
    in_flight: list[tuple[float, int, bytes]] = field(default_factory=list)
    queue_free_at: float = 0.0
    # Sees every datagram that enters this direction, before impairments (tests record traffic with it).
    tap: Callable[[bytes], object] | None = None

    def admit(self, data: bytes, now: float, order: itertools.count) -> list[tuple[float, int, bytes]]:
        """Decide one arriving datagram's fate: the (delivery time, order, bytes) copies that go on."""
        impairments = self.impairments
        counters = self.counters
        draw = self.random.random
        counters.received += 1
        if impairments.loss and draw() < impairments.loss:
            counters.lost += 1
            return []
        copies = 1
        if impairments.duplicate and draw() < impairments.duplicate:
            counters.duplicated += 1
            copies = 2
        scheduled = []
        for _ in range(copies):
            payload = data
            if impairments.corrupt and payload and draw() < impairments.corrupt:
                counters.corrupted += 1
                position = self.random.randrange(len(payload))
                flipped = payload[position] ^ (1 << self.random.randrange(8))
                payload = payload[:position] + bytes((flipped,)) + payload[position + 1 :]
            departure = now
            if impairments.rate is not None:
                backlog_seconds = self.queue_free_at - now
                if backlog_seconds * impairments.rate > impairments.queue_bytes:
                    counters.queue_dropped += 1
                    continue
                departure = max(self.queue_free_at, now) + len(payload) / impairments.rate
                self.queue_free_at = departure
            arrival = departure + impairments.delay
            if impairments.jitter:
                arrival += draw() * impairments.jitter
            if impairments.reorder and draw() < impairments.reorder:
                counters.reordered += 1
                arrival += impairments.reorder_delay
            scheduled.append((arrival, next(order), payload))
        return scheduled


class LossyLink:
    def __init__(
        self,
        far: Address,
        impairments: Impairments = Impairments(),
        *,
        seed: int = 0,
        impairments_back: Impairments | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        near: Address | None = None,
    ) -> None:
        self.far = far
        # The near peer's address: learnt from the first datagram unless given (so the far side may speak first).
        self.near = near
        self.forward = Direction(impairments, random.Random(seed))
        self.backward = Direction(
            impairments if impairments_back is None else impairments_back, random.Random(seed ^ 0x5EED)
        )
        self._host = host
        self._port = port
        self._order = itertools.count()
        self.listen_address: Address | None = None
        self.far_facing_address: Address | None = None

    async def run(self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
        """Forward until cancelled; reports the listening (near-side) address once ready."""
        with (
            open_udp_socket(self._host, self._port) as near_socket,
            open_udp_socket(self._host, 0) as far_socket,
        ):
            self.listen_address = near_socket.local_address
            self.far_facing_address = far_socket.local_address
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, self.forward, near_socket, far_socket, True)
                nursery.start_soon(self._pump, self.backward, far_socket, near_socket, False)
                task_status.started(self.listen_address)

    async def _pump(self, direction: Direction, inbound: UdpSocket, outbound: UdpSocket, is_forward: bool) -> None:
        in_flight = direction.in_flight
        while True:
            now = trio.current_time()
            due: list[bytes] = []
            while in_flight and in_flight[0][0] <= now:
                due.append(heapq.heappop(in_flight)[2])
            if due:
                await self._deliver(direction, outbound, due, is_forward)
                continue
            deadline = in_flight[0][0] if in_flight else math.inf
            batch: list[tuple[bytes, Address]] = []
            with trio.move_on_at(deadline):
                batch = await inbound.receive_batch(512)
            if not batch:
                continue
            now = trio.current_time()
            immediate: list[bytes] = []
            for data, source in batch:
                if is_forward:
                    self.near = source
                elif source != self.far:
                    continue
                if direction.tap is not None:
                    direction.tap(data)
                for scheduled in direction.admit(data, now, self._order):
                    if scheduled[0] <= now and not in_flight:
                        immediate.append(scheduled[2])
                    else:
                        heapq.heappush(in_flight, scheduled)
            if immediate:
                await self._deliver(direction, outbound, immediate, is_forward)

    async def _deliver(self, direction: Direction, outbound: UdpSocket, datagrams: list[bytes], is_forward: bool) -> None:
        destination = self.far if is_forward else self.near
        if destination is None:
            return
        direction.counters.forwarded += len(datagrams)
        direction.counters.forwarded_bytes += sum(map(len, datagrams))
        await outbound.send_batch([(data, destination) for data in datagrams])
