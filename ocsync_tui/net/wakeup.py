"""Waiting for "a datagram arrived or the next timer is due" with sub-millisecond precision.

trio sleeps through epoll, whose timeout is whole milliseconds rounded up: a pacer asking to send again
in 100 µs would get 1–2 ms of silence, and a congestion controller reads that silence as a slow path.
On Linux a timerfd (armed in nanoseconds) and the socket go into a private epoll set, and trio waits
for that one descriptor to become readable: it wakes when the socket has data or the timer fires,
without spinning. Elsewhere the wait falls back to trio's own deadline.

    waiter = Waiter(udp.fileno())
    await waiter.wait_until(deadline)   # trio time; returns early when the socket is readable
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import select
from typing import Any

import trio

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class _TimeSpec(ctypes.Structure):
    _fields_ = [("seconds", ctypes.c_long), ("nanoseconds", ctypes.c_long)]


class _TimerSpec(ctypes.Structure):
    _fields_ = [("interval", _TimeSpec), ("value", _TimeSpec)]


def _load_timerfd() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes = [ctypes.c_int, ctypes.c_int]
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_TimerSpec), ctypes.c_void_p]
    return create, settime


_TIMERFD = _load_timerfd() if hasattr(select, "epoll") else None


class Waiter:
    def __init__(self, socket_fd: int) -> None:
        self._socket_fd = socket_fd
        self._timer_fd = -1
        self._epoll: select.epoll | None = None
        if _TIMERFD is not None:
            create, self._settime = _TIMERFD
            timer_fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            if timer_fd >= 0:
                self._timer_fd = timer_fd
                self._epoll = select.epoll()
                self._epoll.register(socket_fd, select.EPOLLIN)
                self._epoll.register(timer_fd, select.EPOLLIN)
        self._spec = _TimerSpec()

    @property
    def precise(self) -> bool:
        return self._epoll is not None

    async def wait_until(self, deadline: float) -> None:
        """Return once the socket is readable or `deadline` (trio time) has passed; cancellable."""
        if self._epoll is None:
            with trio.move_on_at(deadline):
                await trio.lowlevel.wait_readable(self._socket_fd)
            return
        delay = deadline - trio.current_time()
        if delay <= 0:
            await trio.lowlevel.checkpoint()
            return
        if math.isfinite(delay):
            seconds = int(delay)
            self._arm(seconds, max(int((delay - seconds) * 1e9), 1))
        try:
            await trio.lowlevel.wait_readable(self._epoll.fileno())
        finally:
            self._arm(0, 0)
            try:
                os.read(self._timer_fd, 8)
            except BlockingIOError:
                pass

    def _arm(self, seconds: int, nanoseconds: int) -> None:
        value = self._spec.value
        value.seconds, value.nanoseconds = seconds, nanoseconds
        if self._settime(self._timer_fd, 0, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            os.close(self._timer_fd)
            self._epoll = None
            self._timer_fd = -1
