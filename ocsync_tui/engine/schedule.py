"""Sync windows: when folder data may go to a peer. Pure functions of a window and the local time.

A window runs from `from_minute` to `to_minute` (minutes after local midnight, the end excluded) and
crosses midnight when it ends before it starts (22:00–06:00). A window that ends where it starts
(from == to) is open all day: a zero-length window would mean "never", which nobody means to set,
and `schedule clear` is how one says "always". No window at all (None) is always open too.
A peer's own window replaces the global one for that peer.

The daemon asks `window_is_open` with the minute of the day its injectable clock gives (local time)
once a second, so a daylight-saving jump or a clock moved by a test is seen at once.
"""

from dataclasses import dataclass
from datetime import datetime

MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class Window:
    from_minute: int
    to_minute: int

    def __post_init__(self) -> None:
        for minute in (self.from_minute, self.to_minute):
            if not 0 <= minute < MINUTES_PER_DAY:
                raise ValueError(f"a window edge is a minute of the day (0..1439), not {minute}")

    @property
    def all_day(self) -> bool:
        return self.from_minute == self.to_minute


def minute_of_day(moment: datetime) -> int:
    return moment.hour * 60 + moment.minute


def window_is_open(window: Window | None, minute: int) -> bool:
    if window is None or window.all_day:
        return True
    if window.from_minute < window.to_minute:
        return window.from_minute <= minute < window.to_minute
    return minute >= window.from_minute or minute < window.to_minute


def effective_window(global_window: Window | None, peer_window: Window | None) -> Window | None:
    return peer_window if peer_window is not None else global_window
