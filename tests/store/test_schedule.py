"""Sync-window logic: open or closed at a minute, crossing midnight, peer override, the next edge."""

from datetime import datetime, timedelta

import pytest
from hypothesis import given, strategies as st

from ocsync_tui.engine.schedule import (
    Window,
    effective_window,
    minute_of_day,
    next_change,
    next_opening,
    window_is_open,
)


def at(hhmm: str, day: int = 10, second: int = 0) -> datetime:
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(2026, 3, day, hours, minutes, second)


def minutes(hhmm: str) -> int:
    return minute_of_day(at(hhmm))


def test_daytime_window_includes_its_start_and_excludes_its_end():
    office = Window(minutes("09:00"), minutes("17:00"))
    assert [window_is_open(office, minutes(t)) for t in ("08:59", "09:00", "12:00", "16:59", "17:00", "23:00")] == [
        False, True, True, True, False, False
    ]


def test_window_crossing_midnight():
    night = Window(minutes("22:00"), minutes("06:00"))
    times = ("21:59", "22:00", "23:59", "00:00", "05:59", "06:00", "12:00")
    assert [window_is_open(night, minutes(t)) for t in times] == [False, True, True, True, True, False, False]


def test_no_window_and_an_all_day_window_are_always_open():
    for window in (None, Window(0, 0), Window(600, 600)):
        assert all(window_is_open(window, minute) for minute in range(24 * 60))
        assert next_opening(window, at("12:00")) is None
        assert next_change(window, at("12:00")) is None


def test_peer_window_overrides_the_global_one():
    global_window, peer_window = Window(60, 120), Window(600, 700)
    assert effective_window(global_window, peer_window) == peer_window
    assert effective_window(global_window, None) == global_window
    assert effective_window(None, peer_window) == peer_window
    assert effective_window(None, None) is None


def test_window_edges_must_be_minutes_of_the_day():
    with pytest.raises(ValueError):
        Window(0, 1440)
    with pytest.raises(ValueError):
        Window(-1, 10)


def test_next_edges_of_a_daytime_window():
    office = Window(minutes("09:00"), minutes("17:00"))
    assert next_opening(office, at("08:00")) == at("09:00")
    assert next_change(office, at("08:00")) == at("09:00")
    assert next_opening(office, at("09:00")) == at("09:00", day=11)  # strictly after now
    assert next_change(office, at("09:00")) == at("17:00")
    assert next_change(office, at("16:59", second=59)) == at("17:00")
    assert next_change(office, at("17:00")) == at("09:00", day=11)
    assert next_opening(office, at("23:30")) == at("09:00", day=11)


def test_next_edges_of_a_window_crossing_midnight():
    night = Window(minutes("22:00"), minutes("06:00"))
    assert next_change(night, at("23:00")) == at("06:00", day=11)
    assert next_opening(night, at("23:00")) == at("22:00", day=11)
    assert next_change(night, at("03:00")) == at("06:00")
    assert next_change(night, at("12:00")) == at("22:00")


def test_next_edge_crosses_a_month_end():
    assert next_opening(Window(60, 120), datetime(2026, 3, 31, 23, 0)) == datetime(2026, 4, 1, 1, 0)


@given(
    st.integers(0, 1439),
    st.integers(0, 1439),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
)
def test_the_state_only_changes_at_next_change(start, end, now):
    """Walking minute by minute from now, the window's state first differs exactly at next_change."""
    window = Window(start, end)
    edge = next_change(window, now)
    if window.all_day:
        assert edge is None
        return
    assert now < edge <= now + timedelta(days=1)
    state = window_is_open(window, minute_of_day(now))
    moment = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while moment < edge:
        assert window_is_open(window, minute_of_day(moment)) == state
        moment += timedelta(minutes=1)
    assert window_is_open(window, minute_of_day(edge)) != state
    opening = next_opening(window, now)
    assert window_is_open(window, minute_of_day(opening))
    assert not window_is_open(window, minute_of_day(opening - timedelta(minutes=1)))
