"""Checkpoint retention, the daemon's side: delete what ``hbd.core.retention`` lets go.

A sweep is looked at again (``due``) when one of its rungs is decided or it
finishes, and every sweep once at start. A pass reads the sweep from the log
(the truth: a replay of its observations, its ``rung.decided`` events, where
each trial ran and which checkpoints ``checkpoint.deleted`` already records),
asks the pure :func:`hbd.core.retention.deletable`, and deletes each answer:

- checkpoints in each executor's own directory (setting ``checkpoints``
  unset): ``delete_checkpoint`` on the executor that ran the trial (every
  configured one when the log does not say: the route is idempotent);
- a shared path or an fsspec URL: the store's ``delete`` in a worker thread;
  for a URL also the executors' local staging copies (the executor that ran
  it and those that ran a trial resuming from it).

Each deletion is then logged as ``checkpoint.deleted`` with the bytes freed,
so a restarted daemon never deletes twice, and ``hbd status`` / ``/metrics``
show the bytes. What failed (409: in use; unreachable) stays undeleted, is
tried again after ``RETRY_DELAY`` and at the next start. All of it runs in its
own task: dispatch never waits for a deletion.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import structlog

from hbd.checkpoints import CheckpointError, DirectoryStore, FsspecStore, open_store
from hbd.core.retention import CheckpointOwner, Keep, deletable
from hbd.core.vocabulary import EventType
from hbd.daemon.backend import ExecutorBackend
from hbd.daemon.clock import Clock
from hbd.daemon.runner import REPLAY_TYPES, UNRESUMABLE, replay
from hbd.errors import ExecutorRejected, ExecutorUnavailable, StoreError
from hbd.store.log import Store, StoredEvent

log = structlog.get_logger(__name__)

CHECKPOINT_DELETED = EventType.CHECKPOINT_DELETED
# What a pass reads besides the replay's input: where trials ran, what is deleted.
_WHERE = frozenset({EventType.TRIAL_DISPATCHED, EventType.TRIAL_RUNNING})
PASS_TYPES = REPLAY_TYPES | _WHERE | {CHECKPOINT_DELETED}
# Trial states that prove the trial ran on an executor.
_RAN = frozenset({"succeeded", "failed"})
# A deletion that failed (the checkpoint in use, the executor away) is tried
# again this much later: a trial resuming from it runs for minutes anyway.
RETRY_DELAY = 30.0
# Deletions of one sweep logged in one transaction: a rung of thousands of
# trials frees its checkpoints in a few commits, not thousands.
LOG_BATCH = 100
# Bytes one deletion is logged as freeing, at most: an executor's answer is
# untrusted, and sums of such numbers must stay exact integers in SQLite and
# JSON. 1 PiB is more than any one checkpoint.
MAX_FREED_BYTES = 2**50


@dataclass(slots=True)
class RetentionStats:
    """Since this daemon started (``/metrics`` counters; the log has the history)."""

    deleted: int = 0
    freed_bytes: int = 0
    failures: int = 0
    passes: int = 0


class Retention:
    """Deletes checkpoints in its own task; ``due`` marks a sweep to look at."""

    def __init__(
        self,
        store: Store,
        backends: Mapping[str, ExecutorBackend],
        clock: Clock,
        *,
        checkpoints: str | None,
        keep: Keep,
        executor_of: Callable[[str], str | None],
        published: Callable[[Iterable[StoredEvent]], None],
    ) -> None:
        self.store = store
        self.backends = backends
        self.clock = clock
        self.checkpoints = checkpoints
        self.keep: Keep = keep
        self._executor_of = executor_of  # placement's memory: trials whose note was dropped
        self._published = published
        self._due: dict[str, None] = {}  # sweeps to look at, in order
        self._retry: dict[str, float] = {}  # sweep -> anyio time of its next try
        self.retry_delay = RETRY_DELAY
        self._wake = anyio.Event()
        self._busy = False  # a pass is under way
        self._refused: set[str] = set()  # executors that cannot delete (warned once)
        self.stats = RetentionStats()
        # Bytes of the checkpoints a sweep still keeps, by sweep, as of its last
        # pass: known only for a shared path or URL, which the daemon can measure.
        self.kept_bytes: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self.keep != "all"

    @property
    def idle(self) -> bool:
        """Nothing to look at, under way or to retry."""
        return not self._due and not self._retry and not self._busy

    def due(self, sweep_id: str) -> None:
        """Look at ``sweep_id`` soon (a rung decided, the sweep finished, a start)."""
        if not self.enabled:
            return
        self._due[sweep_id] = None
        self._wake.set()

    def on_events(self, events: Iterable[StoredEvent]) -> None:
        """Committed events: a decided rung or a finished sweep makes its sweep due."""
        for event in events:
            if event.type in (EventType.RUNG_DECIDED, EventType.SWEEP_FINISHED):
                self.due(event.sweep_id)

    async def run(self) -> None:
        while True:
            if not self._due:
                # anyio's clock, as the wait below: a test's fake clock moves the
                # daemon's time, not how long a checkpoint stays in use.
                now = anyio.current_time()
                ready = [s for s, at in self._retry.items() if at <= now]
                for sweep_id in ready:
                    del self._retry[sweep_id]
                    self._due[sweep_id] = None
            if not self._due:
                self._wake = anyio.Event()
                wait = self.retry_delay if self._retry else None
                if wait is None:
                    await self._wake.wait()
                else:
                    with anyio.move_on_after(wait):
                        await self._wake.wait()
                continue
            sweep_id = next(iter(self._due))
            del self._due[sweep_id]
            self._busy = True
            try:
                done = await self.sweep(sweep_id)
            except StoreError as exc:
                log.warning("checkpoint retention cannot read the log", error=str(exc))
                done = False
            finally:
                self._busy = False
            if not done:
                self._retry[sweep_id] = anyio.current_time() + self.retry_delay

    async def sweep(self, sweep_id: str) -> bool:
        """One pass over a sweep; False if a deletion failed and should be tried again."""
        self.stats.passes += 1
        events = await self.store.sweep_events(sweep_id, types=PASS_TYPES)
        if not events or events[0].type != EventType.SWEEP_SUBMITTED:
            return True
        # A replay of the whole sweep: seconds for a large one, so not in the event
        # loop; pure, so a daemon stopping need not wait for it.
        plan = await anyio.to_thread.run_sync(
            partial(_plan, sweep_id, events, self.keep), abandon_on_cancel=True
        )
        if plan is None:
            return True  # a sweep that cannot be replayed: its checkpoints are left alone
        ids, ran_on, children, ran, deleted = plan
        ok = True
        records: list[tuple[str, dict[str, Any]]] = []
        for trial_id in ids:
            payload = await self._delete(trial_id, ran_on, children)
            if payload is None:
                ok = False
                continue
            if not payload:
                continue  # its executor is no longer configured: left, and not logged
            records.append((CHECKPOINT_DELETED, payload))
            if len(records) >= LOG_BATCH:
                await self._log(sweep_id, records)
                records = []
        await self._log(sweep_id, records)
        if not ok:
            self.stats.failures += 1
        if self.checkpoints is not None:
            gone = deleted | {r[1]["trial_id"] for r in records}
            kept = [t for t in ran if t not in gone]
            try:
                size = await anyio.to_thread.run_sync(partial(_store_bytes, self.checkpoints, kept))
            except (OSError, CheckpointError) as exc:
                log.warning("cannot measure kept checkpoints", sweep_id=sweep_id, error=str(exc))
            else:
                self.kept_bytes[sweep_id] = size
        return ok

    async def _log(self, sweep_id: str, records: list[tuple[str, dict[str, Any]]]) -> None:
        if not records:
            return
        committed = await self.store.append(sweep_id, records, at=self.clock.wall())
        self._published(committed)
        freed = sum(int(r[1]["freed_bytes"]) for r in records)
        self.stats.deleted += len(records)
        self.stats.freed_bytes += freed
        log.info(
            "checkpoints deleted", sweep_id=sweep_id, checkpoints=len(records), freed_bytes=freed
        )

    async def _delete(
        self, trial_id: str, ran_on: Mapping[str, str], children: Mapping[str, list[str]]
    ) -> dict[str, Any] | None:
        """Delete one checkpoint; its ``checkpoint.deleted`` payload, None if it failed
        (tried again later), ``{}`` if nobody here can delete it (left alone)."""
        store = self.checkpoints
        executor = ran_on.get(trial_id) or self._executor_of(trial_id)
        freed = 0
        names: list[str]
        if store is None:
            where = "executor"
            if executor is not None and executor not in self.backends:
                # Ran on an executor no longer configured: nobody here can delete it.
                # Not a failure to retry every RETRY_DELAY; the next start tries again.
                if executor not in self._refused:
                    self._refused.add(executor)
                    log.warning(
                        "checkpoints on an executor no longer configured are left",
                        executor=executor,
                    )
                return {}
            # Unknown (its dispatched note came after its result): ask every one.
            names = [executor] if executor is not None else sorted(self.backends)
        else:
            where = "url" if "://" in store else "shared"
            try:
                freed += await anyio.to_thread.run_sync(partial(_store_delete, store, trial_id))
            except (OSError, CheckpointError) as exc:
                log.warning(
                    "checkpoint not deleted", trial_id=trial_id, store=store, error=str(exc)
                )
                return None
            # A URL store leaves staging copies where the trial ran and where its
            # children downloaded it; a shared path has none.
            names = []
            if where == "url":
                around = [executor, *(ran_on.get(c) for c in children.get(trial_id, []))]
                names = sorted({n for n in around if n is not None and n in self.backends})
        asked = []
        for name in names:
            if name in self._refused:
                continue
            try:
                freed += await self.backends[name].delete_checkpoint(trial_id)
            except ExecutorRejected as exc:
                # It cannot delete (an older agent, a backend without checkpoints): say
                # so once; what it keeps stays, and is not retried.
                self._refused.add(name)
                log.warning("executor cannot delete checkpoints", executor=name, error=str(exc))
                continue
            except ExecutorUnavailable as exc:  # 409 (in use: ExecutorBusy) or away
                log.info("checkpoint not deleted yet", trial_id=trial_id, error=str(exc))
                return None
            asked.append(name)
        freed = min(max(0, freed), MAX_FREED_BYTES)
        return {"trial_id": trial_id, "freed_bytes": freed, "where": where, "executors": asked}


def _store_delete(store: str, trial_id: str) -> int:
    return open_store(store).delete(trial_id)


def _store_bytes(store: str, trial_ids: list[str]) -> int:
    """Bytes of the checkpoints of ``trial_ids`` in a shared path or URL store (links not followed)."""
    opened = open_store(store)
    total = 0
    for trial_id in trial_ids:
        if isinstance(opened, FsspecStore):
            remote = f"{opened.root}/{trial_id}"
            if opened.fs.exists(remote):
                total += int(opened.fs.du(remote))
        elif isinstance(opened, DirectoryStore):
            total += _tree_bytes(opened.root / trial_id)
    return total


def _tree_bytes(root: Path) -> int:
    """Bytes of regular files under ``root``; a link (even ``root`` itself) counts nothing."""
    try:
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            return 0
    except FileNotFoundError:
        return 0
    total = 0
    for dirpath, _, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def _plan(
    sweep_id: str, events: list[StoredEvent], keep: Keep
) -> tuple[list[str], dict[str, str], dict[str, list[str]], list[str], set[str]] | None:
    """What may be deleted now, where each trial ran, and who resumed from whom (pure)."""
    replayed = [e for e in events if e.type in REPLAY_TYPES]
    try:
        machine = replay(sweep_id, replayed)
    except UNRESUMABLE as exc:
        log.warning(
            "checkpoint retention skips a sweep it cannot replay", sweep_id=sweep_id, error=str(exc)
        )
        return None
    # Closed rungs, keyed by bracket position (iterations repeat bracket numbers);
    # an asynchronous rung.decided may promote before its rung closes.
    decided = machine.closed_rungs()
    position = machine.scheduler.position
    promoted: set[str] = set()
    ran_on: dict[str, str] = {}
    deleted: set[str] = set()
    for e in events:
        p = e.payload
        if e.type == EventType.RUNG_DECIDED:
            promoted.update(str(t) for t in p.get("promoted") or ())
        elif e.type in _WHERE and e.trial_id is not None and isinstance(p.get("executor"), str):
            ran_on[e.trial_id] = p["executor"]
        elif e.type == CHECKPOINT_DELETED and e.trial_id is not None:
            deleted.add(e.trial_id)
    resume = bool(machine.matrix.resume)
    # Until the sweep ends, any trial still in the running may become the best,
    # and the best's lineage is kept: so a checkpoint a trial resumed from stays
    # while the sweep runs (a few per rung: 1/eta of the trials), even once its
    # child has its own. At the end nothing can resume any more: every
    # checkpoint outside the best's lineage goes (promoted=False says so).
    ended = machine.finished is not None
    if ended:
        # A sweep that stopped early (a user's stop, early stopping) leaves rungs
        # undecided; nothing of them can be promoted any more either.
        decided.update((position(t.bracket, t.iteration), t.rung) for t in machine.trials.values())
    owners = []
    children: dict[str, list[str]] = {}
    for t in machine.trials.values():
        parent = t.parent if resume else None
        if parent is not None:
            children.setdefault(parent, []).append(t.trial_id)
        owners.append(
            CheckpointOwner(
                trial_id=t.trial_id,
                bracket=position(t.bracket, t.iteration),  # the key `decided` uses
                rung=t.rung,
                state=t.state.value,
                parent=parent,
                promoted=resume and t.trial_id in promoted and not ended,
            )
        )
    best = machine.best()
    ids = deletable(
        owners,
        decided=decided,
        best=best.trial_id if best is not None else None,
        keep=keep,
        deleted=deleted,
    )
    # A trial cancelled before it was sent has no checkpoint: nothing to delete or
    # log. One that succeeded or failed ran somewhere, even when its dispatched
    # note came after its result (and was dropped).
    ran = {t.trial_id for t in machine.trials.values() if t.state.value in _RAN}
    ids = [i for i in ids if (i in ran_on or i in ran) and (ended or i not in children)]
    wrote = [t for t in machine.trials if t in ran_on or t in ran]  # may have a checkpoint
    return ids, ran_on, children, wrote, deleted


__all__ = ["CHECKPOINT_DELETED", "MAX_FREED_BYTES", "RETRY_DELAY", "Retention", "RetentionStats"]
