"""Time as a seam: the daemon reads clocks and sleeps only through a ``Clock``."""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def wall(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class FakeClock:
    """A clock that runs ``rate`` times faster than real time, for tests of timeouts.

    Sleeps really sleep (for ``seconds / rate``), so loops that poll on a
    period neither spin nor starve the event loop, and every reader sees one
    consistent time however many tasks sleep at once.
    """

    def __init__(self, rate: float = 100.0, start: float = 1_700_000_000.0) -> None:
        self.rate = rate
        self._start = start
        self._real_start = time.monotonic()

    def monotonic(self) -> float:
        return self._start + (time.monotonic() - self._real_start) * self.rate

    def wall(self) -> float:
        return self.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds) / self.rate)
