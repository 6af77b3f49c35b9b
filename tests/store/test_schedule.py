"""Sync-window logic: open or closed at a minute, crossing midnight, peer override."""

from datetime import datetime

import pytest

from ocsync_tui.engine.schedule import Window, effective_window, minute_of_day, window_is_open


def at(hhmm: str) -> datetime:
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(2026, 3, 10, hours, minutes)


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
