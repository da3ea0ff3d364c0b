"""One sweep in flight: feed observations to its machine, persist, then act.

The order is the whole point: observations and the decisions they cause are
committed in one transaction *before* anything is sent to an executor, so the
log never lags behind what executors were told. When a commit fails, the
machine is rebuilt from the log (it had run ahead of it), the observations are
kept, and the runner retries with backoff: progress stops cleanly and resumes
once the disk is back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hbd.core import replay as core_replay
from hbd.core.bracket import SweepState
from hbd.core.codec import Record, observation_record
from hbd.core.errors import CoreError, DuplicateEvent, InvalidTransition
from hbd.core.events import (
    CancelTrials,
    Decision,
    Observation,
    StartTrial,
    SweepFinished,
    TrialCancelled,
    TrialFailed,
    TrialSucceeded,
)
from hbd.core.spec import SweepSpec, parse_spec
from hbd.core.sweep import SweepMachine
from hbd.daemon.clock import Clock
from hbd.daemon.lifecycle import decision_records, started_rungs
from hbd.daemon.metricsync import MetricsLedger, MetricsLines, bounded
from hbd.errors import ConflictError, StoreError, StoreWriteError
from hbd.protocol import TrialStatus
from hbd.store.log import Store, StoredEvent

log = structlog.get_logger(__name__)

# Items waiting for one runner. Callbacks block (and so push back on the
# executor) when a runner is this far behind; a sweep has at most a few
# thousand trials in flight, each with a handful of updates.
INBOX_SIZE = 10_000
# Items committed in one transaction: enough to amortise the fsync of
# synchronous=FULL over a burst of results, small enough to keep a commit short.
MAX_BATCH = 500
# Metrics lines committed in one transaction: an item can carry a page of
# 1000 lines (a catch-up after a restart), and 500 such items would be half a
# million records held and written at once.
MAX_BATCH_LINES = 5000
# What an executor's status may put in the log, in characters (a status is
# untrusted: any executor, any size). The agent sends 4 KiB of stderr
# (hbd.executor.agent.STDERR_TAIL_BYTES); a reason is a sentence. Every
# stored row is replayed to every event stream, so each field is bounded.
MAX_REASON_CHARS = 2_000
MAX_STDERR_TAIL_CHARS = 8_192
# Backoff while the database refuses writes (disk full, I/O error).
WRITE_RETRY_BASE = 0.2
WRITE_RETRY_CAP = 10.0


@dataclass(frozen=True, slots=True)
class Observe:
    """A core observation plus what only the log keeps (stderr tail, executor...)."""

    observation: Observation
    extra: Mapping[str, Any] = field(default_factory=dict)


class Ack:
    """Whether a note reached the log: set once it is committed, or dropped."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.logged = False

    def settle(self, logged: bool) -> None:
        if not self.event.is_set():
            self.logged = logged
            self.event.set()


@dataclass(frozen=True, slots=True)
class Note:
    """A log-only fact: sending, dispatched, running, metrics reported, capacity idle."""

    type: str
    payload: Mapping[str, Any]
    # For a write-ahead note (trial.sending): told when it is in the log.
    ack: Ack | None = field(default=None, compare=False)


Item = Observe | Note | MetricsLines


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metrics fit for the log: numbers only, NaN and infinities dropped (they are not JSON)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def clip(text: str | None, limit: int, *, keep: str = "head") -> str | None:
    """``text`` cut to ``limit`` characters, keeping its head (or tail), marked as cut."""
    if text is None or len(text) <= limit:
        return text
    mark = f"[... {len(text) - limit} characters cut]"
    return text[:limit] + mark if keep == "head" else mark + text[-limit:]


def observation_from_status(status: TrialStatus, metric: str) -> Observe | None:
    """The observation a terminal executor status stands for; None while it runs."""
    # Bounded as metrics lines are: finite numbers, MAX_METRIC_KEYS keys, the metric kept.
    metrics = bounded(status.metrics, {metric})
    if status.state == "succeeded":
        return Observe(
            TrialSucceeded(trial_id=status.id, metrics=metrics), {"metric": metrics.get(metric)}
        )
    if status.state == "failed":
        extra = {
            "metrics": metrics,
            "exit_code": status.exit_code,
            "stderr_tail": clip(status.stderr_tail, MAX_STDERR_TAIL_CHARS, keep="tail"),
        }
        reason = clip(status.reason, MAX_REASON_CHARS) or "failed"
        return Observe(TrialFailed(trial_id=status.id, reason=reason), extra)
    if status.state == "cancelled":
        reason = clip(status.reason, MAX_REASON_CHARS) or "cancelled"
        return Observe(TrialCancelled(trial_id=status.id, reason=reason), {})
    return None


def sweep_spec(events: Sequence[StoredEvent]) -> tuple[SweepSpec, int]:
    submitted = events[0].payload
    return parse_spec(submitted["spec_json"]), int(submitted["seed"])


# The log records a replay needs: the machine's inputs, and the decisions it
# checks what it re-derives against (hbd.core.replay). Everything else in a
# sweep's log (dispatched, running, metrics, markers) is log-only.
REPLAY_TYPES = core_replay.REPLAY_TYPES
# What a sweep's log can hold that makes it impossible to replay: a spec this
# hbd no longer accepts, events the machine refuses, a malformed payload, a
# search record of a newer hbd (an unknown bracket order). Whoever replays a
# log (resume, extend, checkpoint retention) skips such a sweep, never stops.
UNRESUMABLE = (CoreError, KeyError, ValueError, IndexError, TypeError)


def replay(sweep_id: str, events: Sequence[StoredEvent]) -> SweepMachine:
    """A fresh machine fed every observation in the log, in log order.

    Raises ``ReplayDiverged`` (a ``CoreError``: the sweep cannot be resumed)
    when a decision it re-derives differs from the logged one, and one of
    ``UNRESUMABLE`` for a log it cannot read.
    """
    return core_replay.replay(sweep_id, events)


class SweepHost(Protocol):
    """What a runner needs of the daemon: the log, the clock, and where its trials go."""

    store: Store
    clock: Clock

    def published(self, events: Iterable[StoredEvent]) -> None:
        """Committed events, for the event streams."""

    def place(self, runner: SweepRunner, start: StartTrial) -> None:
        """Queue a trial to send (or record its cancel if the sweep stopped)."""

    def unplace(self, runner: SweepRunner, trial_id: str) -> bool:
        """Cancel a trial: True if it was never sent (it is cancelled here and now)."""

    def trial_ended(self, trial_id: str) -> None:
        """A trial's terminal event is committed: free its slot."""

    def sweep_stopped(self, runner: SweepRunner) -> None:
        """The machine left RUNNING: nothing more of it is placed."""

    def sweep_finished(self, runner: SweepRunner) -> None:
        """The sweep finished: forget what was kept for its trials."""


class SweepRunner:
    def __init__(self, daemon: SweepHost, spec: SweepSpec, machine: SweepMachine) -> None:
        self.daemon = daemon
        self.spec = spec
        self.machine = machine
        self.sweep_id = machine.sweep_id
        self._send: MemoryObjectSendStream[Item]
        self._receive: MemoryObjectReceiveStream[Item]
        self._send, self._receive = anyio.create_memory_object_stream[Item](INBOX_SIZE)
        self.done = anyio.Event()
        self._started = started_rungs(machine.trials.values())  # rungs already announced
        self._followups: list[Item] = []  # items the runner gives itself (cancel of unsent trials)
        # Last logged metrics line and admitted keys per open trial (see metricsync).
        self.metrics = MetricsLedger(spec.matrix.metric.name)
        self.metrics_loaded = anyio.Event()

    def start_of(self, trial_id: str) -> StartTrial:
        """The start decision of a trial the machine knows, rebuilt from its record."""
        return self.machine.trials[trial_id].start(resume=self.spec.matrix.resume)

    # ---- inputs ----

    async def put(self, item: Item) -> None:
        """Hand the runner an item; dropped once the sweep has finished (nothing can change it)."""
        try:
            await self._send.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            if isinstance(item, Note) and item.ack is not None:
                item.ack.settle(False)
            log.debug(
                "sweep already finished; item dropped", sweep_id=self.sweep_id, item=repr(item)
            )

    async def log_first(self, note: Note) -> bool:
        """Put a note and wait until it is committed (True) or dropped because its
        trial or sweep has ended (False): what it announces may happen only after."""
        ack = Ack()
        await self.put(Note(note.type, note.payload, ack))
        await ack.event.wait()
        return ack.logged

    # ---- the loop ----

    async def run(self) -> None:
        log.info("sweep running", sweep_id=self.sweep_id)
        pending: list[Item] = []
        failures = 0
        with self._send, self._receive:  # closed even if cancelled while loading
            await self._load_metrics()
            while self.machine.finished is None:
                pending.extend(self._followups)
                self._followups.clear()
                if not pending:
                    pending.append(await self._receive.receive())
                lines = sum(len(i.lines) for i in pending if isinstance(i, MetricsLines))
                while len(pending) < MAX_BATCH and lines < MAX_BATCH_LINES:
                    try:
                        item = self._receive.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    pending.append(item)
                    if isinstance(item, MetricsLines):
                        lines += len(item.lines)
                try:
                    await self._step(pending)
                except StoreWriteError as exc:
                    failures += 1
                    delay = min(WRITE_RETRY_CAP, WRITE_RETRY_BASE * 2 ** (failures - 1))
                    log.error(
                        "cannot write the event log; progress paused",
                        sweep_id=self.sweep_id,
                        error=str(exc),
                        retry_in=delay,
                    )
                    await self.daemon.clock.sleep(delay)
                    await self._rebuild()
                    continue
                failures = 0
                pending = []
            self._drop_waiting()
        self.done.set()
        log.info(
            "sweep finished",
            sweep_id=self.sweep_id,
            status=self.machine.finished.status,
            reason=self.machine.finished.reason,
        )

    def _drop_waiting(self) -> None:
        """The sweep is over: notes still queued will never be logged; say so to their waiters."""
        while True:
            try:
                item = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
            if isinstance(item, Note) and item.ack is not None:
                item.ack.settle(False)

    async def _load_metrics(self) -> None:
        """Where each open trial's metrics log stands (a repeat is then skipped, not refused)."""
        try:
            self.metrics.load(await self.daemon.store.open_trial_metrics(self.sweep_id))
        except StoreError as exc:
            # Repeats are then refused by the store, which makes the runner rebuild (and retry this).
            log.error("cannot read metrics state", sweep_id=self.sweep_id, error=str(exc))
        self.metrics_loaded.set()

    async def _rebuild(self) -> None:
        """Our machine ran ahead of a write that did not happen: start again from the log."""
        while True:
            try:
                events = await self.daemon.store.sweep_events(self.sweep_id, types=REPLAY_TYPES)
                self.machine = replay(self.sweep_id, events)
                self._started = started_rungs(self.machine.trials.values())
                self.metrics.load(await self.daemon.store.open_trial_metrics(self.sweep_id))
                return
            except StoreError as exc:
                log.error("cannot read the event log", sweep_id=self.sweep_id, error=str(exc))
                await self.daemon.clock.sleep(WRITE_RETRY_CAP)

    async def _step(self, items: list[Item], *, retried: bool = False) -> None:
        records, actions = self._decide(items)
        if not records:
            return
        try:
            committed = await self.daemon.store.append(
                self.sweep_id, records, at=self.daemon.clock.wall()
            )
        except ConflictError as exc:
            if retried:
                raise
            # The log already holds one of these results (the store's own idempotence
            # check): rebuild from the log, where the repeat now shows as a duplicate.
            log.warning("repeat refused by the store", sweep_id=self.sweep_id, error=str(exc))
            await self._rebuild()
            await self._step(items, retried=True)
            return
        self.daemon.published(committed)
        for item in items:
            if isinstance(item, Note) and item.ack is not None:
                item.ack.settle(True)
        for item in items:
            if isinstance(item, Observe) and isinstance(
                item.observation, TrialSucceeded | TrialFailed | TrialCancelled
            ):
                self.daemon.trial_ended(item.observation.trial_id)
                self.metrics.forget(item.observation.trial_id)
        for decision in actions:
            await self.act(decision)
        if self.machine.state is not SweepState.RUNNING:
            self.daemon.sweep_stopped(self)

    def _decide(self, items: list[Item]) -> tuple[list[Record], list[Decision]]:
        records: list[Record] = []
        actions: list[Decision] = []
        for item in items:
            if isinstance(item, MetricsLines):
                if self._still_open(item.trial_id):
                    records.extend(self.metrics.records(item))
                continue
            if isinstance(item, Note):
                if self._still_open(item.payload.get("trial_id")):
                    records.append((item.type, dict(item.payload)))
                elif item.ack is not None:
                    item.ack.settle(False)
                continue
            try:
                decisions = self.machine.handle(item.observation)
            except DuplicateEvent:
                continue  # a callback and a poll crossed: the first one won
            except InvalidTransition as exc:
                log.warning("result rejected", sweep_id=self.sweep_id, error=str(exc))
                continue
            records.append(observation_record(item.observation, **item.extra))
            records.extend(decision_records(decisions, self._started))
            actions.extend(decisions)
        return records, actions

    def _still_open(self, trial_id: object) -> bool:
        """Notes about a trial that ended (a late 'running', a stray metric) are dropped."""
        if trial_id is None:
            return True
        trial = self.machine.trials.get(str(trial_id))
        return trial is not None and not trial.state.ended

    async def act(self, decision: Decision) -> None:
        if isinstance(decision, StartTrial):
            self.daemon.place(self, decision)
        elif isinstance(decision, CancelTrials):
            for trial_id in decision.trial_ids:
                # On an executor, or its POST in flight (cancelled once it returns);
                # or never sent: nothing to kill, it is cancelled here and now.
                if self.daemon.unplace(self, trial_id):
                    self._followups.append(
                        Observe(TrialCancelled(trial_id=trial_id, reason=decision.reason))
                    )
        elif isinstance(decision, SweepFinished):
            self.daemon.sweep_finished(self)
