"""Why a slot stands idle: ``capacity.idle`` notes, at most one per sweep per interval.

After each placement round the dispatcher asks :class:`CapacityWatch` for the
notes to write. The reason comes from the one classifier,
:func:`hbd.daemon.placement.idle_reason` (``/metrics`` uses the same
:class:`~hbd.daemon.placement.IdleReason` words). A sweep leaves capacity
unused because:

- ``no_executor``: trials are queued but no healthy executor can take them;
- ``concurrency_cap``: trials are queued and executors have free slots, but
  the sweep is at its ``concurrency`` limit;
- ``affinity``: a promoted trial waits for a slot on its parent's executor
  (where its checkpoint is) while others have free slots;
- ``gpu``: trials wait for free GPU devices (or ask for more than any
  executor has) while slots are free;
- ``rung_barrier``: nothing is queued, executors have free slots, and the
  sweep waits for running trials to end before it can decide a rung.

A note is written when a sweep's reason changes to one of these, and never
more often than ``CAPACITY_NOTE_INTERVAL`` per sweep: a fast sweep crosses a
rung barrier many times a second, and the log must not fill with them.
"""

from __future__ import annotations

from typing import Any

from hbd.daemon.lifecycle import CAPACITY_IDLE
from hbd.daemon.placement import IdleReason, Placement
from hbd.daemon.runner import Note

# The least time between two capacity notes of one sweep. A person watching a
# sweep wants to know why it idles, not every flicker of it; once a second
# keeps a busy sweep's log from growing by more than a few rows a second.
CAPACITY_NOTE_INTERVAL = 1.0

_DETAIL = {
    IdleReason.NO_EXECUTOR: "trials are queued but no healthy executor has a free slot",
    IdleReason.CONCURRENCY_CAP: "trials are queued but the sweep is at its concurrency limit",
    IdleReason.AFFINITY: "a promoted trial waits for a slot on its parent's executor",
    IdleReason.GPU: "trials are queued but no executor has enough free GPU devices",
    IdleReason.RUNG_BARRIER: (
        "executors have free slots; the sweep waits for running trials to end its rungs"
    ),
}


class CapacityWatch:
    def __init__(self, placement: Placement, interval: float = CAPACITY_NOTE_INTERVAL) -> None:
        self.placement = placement
        self.interval = interval
        self._reason: dict[str, IdleReason | None] = {}  # sweep id -> last reason seen
        self._noted_at: dict[str, float] = {}  # sweep id -> time of its last note

    def check(self, now: float) -> list[tuple[str, Note]]:
        """The ``capacity.idle`` notes to write now, as (sweep id, note)."""
        placement = self.placement
        reasons = placement.idle_reasons(now)
        for sweep_id in list(self._reason):
            if sweep_id not in placement.sweeps:
                self._reason.pop(sweep_id, None)
                self._noted_at.pop(sweep_id, None)
        queued = placement.queued_by_sweep()
        free = sum(e.free for e in placement.executors.values() if e.usable(now))
        notes: list[tuple[str, Note]] = []
        for sweep_id, reason in reasons.items():
            if reason == self._reason.get(sweep_id):
                continue
            last = self._noted_at.get(sweep_id)
            if reason is not None and last is not None and now - last < self.interval:
                continue  # too soon: keep the old reason so a later check may still note it
            self._reason[sweep_id] = reason
            if reason is None:
                continue
            self._noted_at[sweep_id] = now
            sweep = placement.sweeps[sweep_id]
            payload: dict[str, Any] = {
                "reason": reason.value,
                "detail": _DETAIL.get(reason, reason.value),
                "queued": queued.get(sweep_id, 0),
                "running": len(sweep.inflight),
                "free_slots": free,
                "concurrency": sweep.concurrency,
            }
            notes.append((sweep_id, Note(CAPACITY_IDLE, payload)))
        return notes
