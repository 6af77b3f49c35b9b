"""Where the daemon reads the local time of day (sync windows): one source, replaceable in tests.

A daemon started with OCSYNC_TIME_OF_DAY_FILE set reads "HH:MM" from that file instead of the clock,
so an end-to-end test can open and close windows of a real daemon process by rewriting one file.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from pathlib import Path

from ocsync_tui.engine.schedule import minute_of_day

TIME_OF_DAY_FILE_ENV = "OCSYNC_TIME_OF_DAY_FILE"

MinuteSource = Callable[[], int]


def system_minute_of_day() -> int:
    return minute_of_day(datetime.datetime.now())


def file_minute_of_day(path: Path) -> MinuteSource:
    def read() -> int:
        try:
            hours, minutes = path.read_text().strip().split(":")
            return (int(hours) % 24) * 60 + int(minutes) % 60
        except (OSError, ValueError):
            return system_minute_of_day()

    return read


def minute_source_from_environment() -> MinuteSource:
    configured = os.environ.get(TIME_OF_DAY_FILE_ENV)
    return file_minute_of_day(Path(configured)) if configured else system_minute_of_day
