"""Liveness of one peer: a Ping every `interval` (20 s by default, as NATs forget UDP mappings after
about 30 s), answered by a Pong, and a verdict from what arrives.

Any authenticated frame from the peer counts as a sign of life (the owner calls `note_received`; Pings
and Pongs given to `receive_frame` count too). At each Ping after the first, an interval in which
nothing arrived is a miss; `misses_allowed` misses in a row make the peer down (PeerDown), and the
next frame from it makes it up again (PeerUp, also reported on first contact).

Sans-I/O: `frames_to_send(now)`, `get_timer()`, `handle_timer(now)`, `next_event()`.
"""

from __future__ import annotations

import enum
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from ocsync_tui.net import events, frames
from ocsync_tui.net.frames import FrameError

DEFAULT_INTERVAL = 20.0
DEFAULT_MISSES_ALLOWED = 3


class Liveness(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class KeepaliveCore:
    def __init__(
        self,
        public_key: bytes,
        now: float,
        *,
        interval: float = DEFAULT_INTERVAL,
        misses_allowed: int = DEFAULT_MISSES_ALLOWED,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.public_key = public_key
        self.interval = interval
        self.misses_allowed = misses_allowed
        self.liveness = Liveness.UNKNOWN
        self._random_bytes = random_bytes
        self._started = now
        # The first Ping goes out at once: it opens our side's NAT mapping.
        self._next_ping = now
        self._previous_ping: float | None = None
        self._last_received: float | None = None
        self._misses = 0
        self._outbox: list[bytes] = []
        self._events: deque[Any] = deque()

    def note_received(self, now: float) -> None:
        self._last_received = now
        if self.liveness is not Liveness.UP:
            self.liveness = Liveness.UP
            self._events.append(events.PeerUp(self.public_key))

    def receive_frame(self, data: bytes, now: float) -> None:
        try:
            frame = frames.decode(data)
        except FrameError:
            return
        if isinstance(frame, frames.Ping):
            self._outbox.append(frames.encode_pong(frame.nonce))
        if isinstance(frame, (frames.Ping, frames.Pong)):
            self.note_received(now)

    def frames_to_send(self, now: float) -> list[bytes]:
        if now >= self._next_ping:
            self.handle_timer(now)
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float:
        return self._next_ping

    def handle_timer(self, now: float) -> None:
        if now < self._next_ping:
            return
        if self._previous_ping is not None:
            silent = self._last_received is None or self._last_received < self._previous_ping
            self._misses = self._misses + 1 if silent else 0
            if self._misses >= self.misses_allowed and self.liveness is not Liveness.DOWN:
                self.liveness = Liveness.DOWN
                since = self._last_received if self._last_received is not None else self._started
                self._events.append(events.PeerDown(self.public_key, now - since))
        self._outbox.append(frames.encode_ping(int.from_bytes(self._random_bytes(8), "big")))
        self._previous_ping = now
        self._next_ping = now + self.interval

    def next_event(self) -> Any:
        return self._events.popleft() if self._events else None
