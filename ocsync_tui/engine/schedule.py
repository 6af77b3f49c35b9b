"""Sync windows: when folder data may go to a peer. Pure functions of a window and the local time.

A window runs from `from_minute` to `to_minute` (minutes after local midnight, the end excluded) and
crosses midnight when it ends before it starts (22:00–06:00). A window that ends where it starts
(from == to) is open all day: a zero-length window would mean "never", which nobody means to set,
and `schedule clear` is how one says "always". No window at all (None) is always open too.
A peer's own window replaces the global one for that peer.

Times are wall-clock datetimes as the daemon's injectable clock gives them (naive local time), and the
edges are computed in wall-clock terms; the scheduler wakes at an edge and asks `window_is_open`
again, so a daylight-saving jump costs at most a late or early wake-up, never a wrong answer.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

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


def _next_time_at(minute: int, now: datetime) -> datetime:
    """The first moment strictly after `now` whose wall clock reads `minute` (today or tomorrow)."""
    candidate = now.replace(hour=minute // 60, minute=minute % 60, second=0, microsecond=0)
    return candidate if candidate > now else candidate + timedelta(days=1)


def next_opening(window: Window | None, now: datetime) -> datetime | None:
    """When the window next opens after `now` (its next start); None if it never closes."""
    if window is None or window.all_day:
        return None
    return _next_time_at(window.from_minute, now)


def next_change(window: Window | None, now: datetime) -> datetime | None:
    """The next moment after `now` when the window opens or closes; None if it never closes."""
    if window is None or window.all_day:
        return None
    return min(_next_time_at(window.from_minute, now), _next_time_at(window.to_minute, now))
