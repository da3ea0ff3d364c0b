"""Why a slot stands idle: ``capacity.idle`` notes, at most one per sweep per interval.

After each placement round the dispatcher asks :class:`CapacityWatch` to look
at every running sweep. A sweep leaves capacity unused for one of three
reasons, each recorded as a ``capacity.idle`` event in its log:

- ``no_executor``: trials are queued but no healthy executor can take them;
- ``concurrency_cap``: trials are queued and executors have free slots, but
  the sweep is at its ``concurrency`` limit;
- ``rung_barrier``: nothing is queued, executors have free slots, and the
  sweep waits for running trials to end before it can decide a rung.

A note is written when a sweep's reason changes to one of these, and never
more often than ``CAPACITY_NOTE_INTERVAL`` per sweep: a fast sweep crosses a
rung barrier many times a second, and the log must not fill with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anyio.abc import TaskGroup

from hbd.core.bracket import SweepState
from hbd.daemon.lifecycle import CAPACITY_IDLE
from hbd.daemon.runner import Note

if TYPE_CHECKING:
    from hbd.daemon.app import Daemon

# The least time between two capacity notes of one sweep. A person watching a
# sweep wants to know why it idles, not every flicker of it; once a second
# keeps a busy sweep's log from growing by more than a few rows a second.
CAPACITY_NOTE_INTERVAL = 1.0

NO_EXECUTOR = "no_executor"
CONCURRENCY_CAP = "concurrency_cap"
RUNG_BARRIER = "rung_barrier"

_DETAIL = {
    NO_EXECUTOR: "trials are queued but no healthy executor has a free slot",
    CONCURRENCY_CAP: "trials are queued but the sweep is at its concurrency limit",
    RUNG_BARRIER: "executors have free slots; the sweep waits for running trials to end its rungs",
}


class CapacityWatch:
    def __init__(self, daemon: Daemon, interval: float = CAPACITY_NOTE_INTERVAL) -> None:
        self.daemon = daemon
        self.interval = interval
        self._reason: dict[str, str | None] = {}  # sweep id -> last reason seen
        self._noted_at: dict[str, float] = {}  # sweep id -> monotonic time of its last note

    def check(self, queued: dict[str, int], tg: TaskGroup) -> None:
        """Look at every running sweep; ``queued`` counts queued trials by sweep id."""
        daemon = self.daemon
        now = daemon.clock.monotonic()
        usable = [
            e
            for e in daemon.pool.executors.values()
            if e.healthy and e.slots and e.down_until <= now
        ]
        free = sum(e.free for e in usable)
        for sweep_id in list(self._reason):
            if sweep_id not in daemon.runners:
                self._reason.pop(sweep_id, None)
                self._noted_at.pop(sweep_id, None)
        for sweep_id, runner in list(daemon.runners.items()):
            if runner.machine.state is not SweepState.RUNNING:
                continue
            waiting = queued.get(sweep_id, 0)
            running = len(daemon.dispatcher.inflight(sweep_id))
            limit = runner.spec.matrix.concurrency
            reason = self.reason(waiting, running, limit, usable=bool(usable), free=free)
            if reason == self._reason.get(sweep_id):
                continue
            last = self._noted_at.get(sweep_id)
            if reason is not None and last is not None and now - last < self.interval:
                continue  # too soon: keep the old reason so a later check may still note it
            self._reason[sweep_id] = reason
            if reason is None:
                continue
            self._noted_at[sweep_id] = now
            payload: dict[str, Any] = {
                "reason": reason,
                "detail": _DETAIL[reason],
                "queued": waiting,
                "running": running,
                "free_slots": free,
                "concurrency": limit,
            }
            tg.start_soon(runner.put, Note(CAPACITY_IDLE, payload))

    @staticmethod
    def reason(
        waiting: int, running: int, limit: int | None, *, usable: bool, free: int
    ) -> str | None:
        if waiting:
            if not usable:
                return NO_EXECUTOR
            if limit is not None and running >= limit and free:
                return CONCURRENCY_CAP
            return None  # executors are full: busy, not idle
        if running and free:
            return RUNG_BARRIER
        return None
