"""The one settable clock of tests, benchmarks and the local stack's simulations.

Whatever takes a ``clock: Callable[[], datetime]`` (the reporter, the commerce emulator,
the local host's timers) reads it; the test or the chaos run moves it by hand. Thread-safe,
because the things reading it run on their own threads.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta


class SettableClock:
    """``clock()`` is the current simulated time; ``set`` and ``advance`` move it."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = moment

    def advance(self, step: timedelta) -> datetime:
        with self._lock:
            self._now += step
            return self._now
