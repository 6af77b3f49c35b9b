"""Devices we do not know that tried to connect: a bounded table for the user to look at.

Each device is reported upward once, then again at most once per `report_interval` however often it
tries, and the table holds at most `capacity` devices (the one seen longest ago makes room), so a
flood of made-up keys costs bounded memory and bounded events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ocsync_tui.net.events import UnknownDeviceAttempt


@dataclass
class UnknownDevice:
    public_key: bytes
    endpoint: Any
    attempts: int
    last_seen: float
    last_reported: float


class UnknownDevices:
    def __init__(self, capacity: int = 256, report_interval: float = 600.0) -> None:
        self.capacity = capacity
        self.report_interval = report_interval
        self._devices: dict[bytes, UnknownDevice] = {}

    def record(self, public_key: bytes, endpoint: Any, now: float) -> UnknownDeviceAttempt | None:
        """Count an attempt; return the event to report, or None while the device's report is recent."""
        device = self._devices.pop(public_key, None)
        if device is None:
            if len(self._devices) >= self.capacity:
                del self._devices[next(iter(self._devices))]
            device = UnknownDevice(public_key, endpoint, 0, now, float("-inf"))
        device.attempts += 1
        device.endpoint = endpoint
        device.last_seen = now
        # Re-inserting keeps the dict ordered by last attempt, so the first key is the one to evict.
        self._devices[public_key] = device
        if now - device.last_reported < self.report_interval:
            return None
        device.last_reported = now
        return UnknownDeviceAttempt(public_key, endpoint, device.attempts)

    def forget(self, public_key: bytes) -> None:
        self._devices.pop(public_key, None)

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self):
        return iter(list(self._devices.values()))
