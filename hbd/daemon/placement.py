"""Placement: where each in-flight trial is, as a pure state machine.

Everything the daemon knows about trials between "scheduled" (committed) and
"ended" (committed), and about the executors' slots and devices, lives here
and nowhere else. It is h11-shaped: methods take an event and the current
time (``now``, a monotonic reading the caller made) and return the actions
the caller must carry out; nothing here reads a clock, awaits, or does I/O.
The dispatcher and the reconciler are the anyio shells that carry the
actions out and feed what they learn back in.

One record per trial (:class:`Flight`) moves through four phases::

    (enqueue) -> QUEUED --place--> SENDING --sent--> SENT --ended--> (gone)
                   ^                  |                |
                   +-- busy / failed -+   +-- not found-+   SENT --lost_after--> LOST

- QUEUED: waits, deeper rungs first and then in scheduling order
  (``RungQueue``: full-resource results come early; decisions do not change),
  for its sweep to be under its
  ``concurrency`` and an executor with a free slot (and as many free GPU
  devices as the trial asks for); a promoted trial of a ``resume: true`` sweep
  waits for its parent's executor (``only``), unless checkpoints are shared
  (``shared_checkpoints``: a path every executor mounts, or a URL): then it
  goes to its parent's executor if that one can take it now (``prefer``),
  else to any other.
- SENDING: its submit is on its way; a cancel is kept (``cancel_pending``)
  and carried out when the submit returns; it is never polled (a 404 would
  only mean "not yet").
- SENT: on an executor; polled when silent for ``SILENCE``; declared LOST
  when its executor has been unreachable for ``lost_after``.
- LOST: failed as lost (the failure is being committed); cancelled on its
  executor, best effort, once that executor answers again. A QUEUED trial
  pinned (``only``) to an executor unreachable for ``lost_after`` is lost too:
  nothing else would end it, and its rung would wait for ever.

A slot (and the trial's devices) is held from SENDING until the trial's
terminal event is committed (``ended``), so a trial never runs twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from hbd.core.events import StartTrial
from hbd.daemon.rungqueue import RungQueue
from hbd.protocol import Health

# Tries to place one trial before failing it: with the executor cooldown
# doubling from 0.5 s to 30 s this is several minutes of trying.
MAX_DISPATCH_ATTEMPTS = 12
# Executors that failed a submit are skipped for this long, doubling per
# consecutive failure up to the cap, so one dead host does not stall dispatch.
COOLDOWN_BASE = 0.5
COOLDOWN_CAP = 30.0
# A running trial silent for this long is polled; callbacks normally arrive first.
SILENCE = 5.0
# A trial whose executor has been unreachable this long is failed as lost.
LOST_AFTER = 60.0


class Phase(Enum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    LOST = "lost"


class IdleReason(Enum):
    """Why capacity stands unused: the one vocabulary of ``capacity.idle`` and ``/metrics``."""

    NO_EXECUTOR = "no_executor"  # work waits, no healthy executor can take it
    CONCURRENCY_CAP = "concurrency_cap"  # work waits, its sweep is at its concurrency
    GPU = "gpu"  # work waits for free GPU devices (or no executor has that many)
    AFFINITY = "affinity"  # a promoted trial waits for its parent's executor
    RUNG_BARRIER = "rung_barrier"  # nothing waits; running trials must end a rung
    NO_WORK = "no_work"  # nothing to run at all


@dataclass(slots=True)
class ExecutorSlots:
    """One executor as placement sees it: its capacity and its health."""

    name: str
    slots: int = 0
    gpus: int = 0  # devices it reported
    healthy: bool = False
    down_until: float = 0.0  # nothing is sent before this (cooldown after failed submits)
    failures: int = 0
    busy: bool = False  # answered 429: skipped until a slot frees or a health check
    unreachable_since: float | None = None  # first failure in a row
    running: set[str] = field(default_factory=set)  # our trials holding a slot here
    gpus_held: int = 0  # devices held by our trials here
    # Devices its last health said were taken beyond ours (another daemon's
    # trials, a stale trial): counted as busy until the next health check.
    gpus_other: int = 0
    lost: set[str] = field(default_factory=set)  # given up on: cancel once it answers
    # Cancels of those copies on their way: no run of such a trial is sent here
    # until its cancel has returned, or the cancel could kill the new run.
    cancelling: set[str] = field(default_factory=set)

    @property
    def free(self) -> int:
        return max(0, self.slots - len(self.running))

    @property
    def free_gpus(self) -> int:
        return max(0, self.gpus - self.gpus_held - self.gpus_other)

    def usable(self, now: float) -> bool:
        return self.healthy and bool(self.slots) and self.down_until <= now


@dataclass(slots=True)
class Flight:
    """One trial between its scheduling commit and its terminal commit."""

    start: StartTrial
    sweep_id: str
    phase: Phase
    queued_at: float  # first queued: the start of dispatch latency
    attempts: int = 0
    executor: str | None = None
    only: str | None = None  # the one executor it may go to (affinity, maybe-sent)
    prefer: str | None = None  # tried first when free (its parent's, checkpoints shared)
    gpus: int = 0
    heard_at: float = 0.0
    cancel_pending: bool = False

    @property
    def trial_id(self) -> str:
        return self.start.trial_id


@dataclass(slots=True)
class SweepSlots:
    concurrency: int | None
    gpus: int  # devices each trial asks for
    open: bool = True  # False once the sweep stops: nothing more is placed
    inflight: set[str] = field(default_factory=set)  # SENDING, SENT or LOST


# ---- actions: what the shells must do ----


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    start: StartTrial
    sweep_id: str
    executor: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Dispatched:
    """Log ``trial.dispatched``; ``latency``: seconds from queueing to acceptance."""

    trial_id: str
    sweep_id: str
    executor: str
    latency: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOn:
    """Ask ``executor`` to cancel the trial (its status goes to the sweep, if any)."""

    trial_id: str
    sweep_id: str | None
    executor: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Poll:
    trial_id: str
    sweep_id: str
    executor: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Fail:
    trial_id: str
    sweep_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Lost:
    """Log ``trial.lost``, then fail the trial."""

    trial_id: str
    sweep_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelUnsent:
    """Record the cancel of a trial that is not (and will not be) on any executor."""

    trial_id: str
    sweep_id: str
    reason: str


Action = Send | Dispatched | CancelOn | Poll | Fail | Lost | CancelUnsent


class Placement:
    def __init__(
        self,
        *,
        lost_after: float = LOST_AFTER,
        silence: float = SILENCE,
        shared_checkpoints: bool = False,
    ) -> None:
        self.lost_after = lost_after
        self.silence = silence
        # Every executor reaches every checkpoint: a resumed promotion may run anywhere.
        self.shared_checkpoints = shared_checkpoints
        self.executors: dict[str, ExecutorSlots] = {}
        self.sweeps: dict[str, SweepSlots] = {}
        self.flights: dict[str, Flight] = {}
        # QUEUED trial ids: by StartTrial.priority (deeper rungs first), then in order.
        self._queue = RungQueue(lambda trial_id: self.flights[trial_id].start.priority)
        # trial -> executor it was sent to, kept after it ends (until its sweep
        # is forgotten): a resumed promotion goes where its parent ran.
        self._ran_on: dict[str, str] = {}
        self.affinity_unknown: list[StartTrial] = []  # drained by the shell (a warning each)

    # ---- executors ----

    def add_executor(self, name: str) -> ExecutorSlots:
        slots = self.executors[name] = self.executors.get(name) or ExecutorSlots(name)
        return slots

    def health(self, name: str, health: Health | None, now: float) -> list[Action]:
        """A health check answered (``health``) or not (None)."""
        e = self.executors[name]
        if health is None:
            self.unreachable(name, now)
            return []
        # Not a submit success: a cooldown of failed submits stays until one succeeds.
        self.reachable(name)
        e.slots = health.slots
        e.gpus = len(health.gpus)
        e.gpus_other = max(0, len(health.gpus) - len(health.free_gpus) - e.gpus_held)
        e.busy = False
        lost, e.lost = sorted(e.lost), set()
        e.cancelling.update(lost)
        return [CancelOn(trial_id=t, sweep_id=None, executor=name) for t in lost]

    def cancel_when_back(self, trial_id: str, names: Iterable[str]) -> None:
        """Have these executors cancel any copy of the trial once they answer again."""
        for name in names:
            self.executors[name].lost.add(trial_id)

    def lost_cancelled(self, trial_id: str, name: str, *, ok: bool) -> None:
        """A cancel sent to ``name`` returned (``ok`` False: it failed, so it is
        sent again when the executor next answers). Nothing if none was pending."""
        e = self.executors.get(name)
        if e is None or trial_id not in e.cancelling:
            return
        e.cancelling.discard(trial_id)
        if not ok:
            e.lost.add(trial_id)

    def reachable(self, name: str) -> None:
        e = self.executors[name]
        e.healthy = True
        e.unreachable_since = None

    def unreachable(self, name: str, now: float) -> None:
        e = self.executors[name]
        e.healthy = False
        if e.unreachable_since is None:
            e.unreachable_since = now

    # ---- sweeps ----

    def open_sweep(self, sweep_id: str, *, concurrency: int | None, gpus: int = 0) -> None:
        self.sweeps.setdefault(sweep_id, SweepSlots(concurrency=concurrency, gpus=gpus))

    def close_sweep(self, sweep_id: str) -> list[Action]:
        """The sweep stopped: its queued trials are cancelled, nothing more is placed."""
        sweep = self.sweeps.get(sweep_id)
        if sweep is None or not sweep.open:
            return []  # finished, or closed already (a stopped sweep's every step says so)
        sweep.open = False
        actions: list[Action] = []
        for trial_id in [t for t in self._queue if self.flights[t].sweep_id == sweep_id]:
            self._drop(trial_id)
            actions.append(
                CancelUnsent(trial_id=trial_id, sweep_id=sweep_id, reason="sweep stopping")
            )
        return actions

    def forget_sweep(self, sweep_id: str, trial_ids: Iterable[str] = ()) -> None:
        """The sweep finished: nothing of it is kept."""
        for trial_id in [t for t, f in self.flights.items() if f.sweep_id == sweep_id]:
            self.ended(trial_id)
        self.sweeps.pop(sweep_id, None)
        for trial_id in trial_ids:
            self._ran_on.pop(trial_id, None)

    # ---- trials ----

    def enqueue(
        self,
        sweep_id: str,
        start: StartTrial,
        now: float,
        *,
        front: bool = False,
        only: str | None = None,
        attempts: int = 0,
    ) -> list[Action]:
        """Queue a trial to send; cancels it instead when its sweep is no longer open."""
        trial_id = start.trial_id
        sweep = self.sweeps.get(sweep_id)
        old = self.flights.get(trial_id)
        if sweep is None or not sweep.open or (old is not None and old.cancel_pending):
            self._release(trial_id)
            self.flights.pop(trial_id, None)
            self._queue.pop(trial_id, None)
            return [CancelUnsent(trial_id=trial_id, sweep_id=sweep_id, reason="sweep stopping")]
        if old is not None and old.phase is not Phase.QUEUED:
            self._release(trial_id)
        prefer = None
        if only is None:
            if self.shared_checkpoints:
                prefer = self._parent_executor(start)
            else:
                only = self._affinity(start)
        self.flights[trial_id] = Flight(
            start=start,
            sweep_id=sweep_id,
            phase=Phase.QUEUED,
            queued_at=old.queued_at if old is not None else now,
            attempts=attempts,
            only=only,
            prefer=prefer,
            gpus=sweep.gpus,
            heard_at=old.heard_at if old is not None else 0.0,
        )
        self._queue[trial_id] = None
        if front:
            self._queue.move_to_end(trial_id, last=False)
        return []

    def _affinity(self, start: StartTrial) -> str | None:
        """A resumed trial's parent's executor: its checkpoint is there."""
        if start.resume_from is None or start.parent is None:
            return None
        name = self._parent_executor(start)
        if name is None:
            self.affinity_unknown.append(start)
        return name

    def _parent_executor(self, start: StartTrial) -> str | None:
        """The configured executor a resumed trial's parent ran on, if known."""
        if start.resume_from is None or start.parent is None:
            return None
        name = self._ran_on.get(start.parent)
        return name if name is not None and name in self.executors else None

    def dequeue(self, trial_id: str) -> bool:
        """Take a trial out of the queue if it was never sent; True if it was there."""
        if trial_id not in self._queue:
            return False
        self._drop(trial_id)
        return True

    def cancel(self, trial_id: str) -> list[Action]:
        """The sweep cancels a trial that is not queued (see ``dequeue``)."""
        flight = self.flights.get(trial_id)
        if flight is None or flight.executor is None:
            return []
        if flight.phase is Phase.SENDING:
            flight.cancel_pending = True  # carried out when the submit returns
            return []
        return [CancelOn(trial_id=trial_id, sweep_id=flight.sweep_id, executor=flight.executor)]

    def remember(self, trial_id: str, executor: str) -> None:
        """Where a trial was sent, from the log (resume affinity after a restart)."""
        self._ran_on[trial_id] = executor

    def adopt(self, sweep_id: str, start: StartTrial, executor: str, now: float) -> None:
        """A trial already on an executor (found by the reconciler) holds its slot."""
        trial_id = start.trial_id
        if trial_id in self._queue:
            self._drop(trial_id)
        old = self.flights.get(trial_id)
        if old is not None and old.executor is not None:
            self._release(trial_id)
        sweep = self.sweeps.get(sweep_id)
        if sweep is None:
            return  # the sweep finished meanwhile: nothing to hold
        self.flights[trial_id] = Flight(
            start=start,
            sweep_id=sweep_id,
            phase=Phase.SENT,
            queued_at=now,
            executor=executor,
            gpus=sweep.gpus,
            heard_at=old.heard_at if old is not None else 0.0,
        )
        self._hold(trial_id, executor)

    def heard(self, trial_id: str, now: float) -> None:
        flight = self.flights.get(trial_id)
        if flight is not None:
            flight.heard_at = now

    def ended(self, trial_id: str) -> None:
        """The trial's terminal event is committed: its slot and devices are free."""
        self._queue.pop(trial_id, None)
        self._release(trial_id)
        self.flights.pop(trial_id, None)

    # ---- placing ----

    def place(self, now: float) -> list[Action]:
        """Every queued trial that can go somewhere now, in queue order."""
        actions: list[Action] = []
        full = False  # no executor has a free slot for a trial that may go anywhere
        for trial_id in list(self._queue):
            flight = self.flights[trial_id]
            sweep = self.sweeps[flight.sweep_id]
            if not sweep.open:
                self._drop(trial_id)
                actions.append(
                    CancelUnsent(
                        trial_id=trial_id, sweep_id=flight.sweep_id, reason="sweep stopping"
                    )
                )
                continue
            if full and flight.only is None:
                continue
            if sweep.concurrency is not None and len(sweep.inflight) >= sweep.concurrency:
                continue
            executor = self._available(flight, now)
            if executor is None:
                full = full or (flight.only is None and flight.gpus == 0)
                continue
            del self._queue[trial_id]
            flight.phase = Phase.SENDING
            self._hold(trial_id, executor.name)
            actions.append(
                Send(start=flight.start, sweep_id=flight.sweep_id, executor=executor.name)
            )
        return actions

    def _available(self, flight: Flight, now: float) -> ExecutorSlots | None:
        """An executor for the trial: its ``prefer`` if usable, else the one with most free slots."""
        usable = [
            e
            for e in self.executors.values()
            if e.usable(now)
            and e.free
            and not e.busy
            and e.free_gpus >= flight.gpus
            and (flight.only is None or e.name == flight.only)
            and flight.start.trial_id not in e.lost
            and flight.start.trial_id not in e.cancelling
        ]
        if not usable:
            return None
        for e in usable:
            if e.name == flight.prefer:
                return e
        return max(usable, key=lambda e: (e.free, e.name))

    def _hold(self, trial_id: str, name: str) -> None:
        flight = self.flights[trial_id]
        flight.executor = name
        self.sweeps[flight.sweep_id].inflight.add(trial_id)
        e = self.executors[name]
        if trial_id not in e.running:
            e.running.add(trial_id)
            e.gpus_held += flight.gpus
        self._ran_on[trial_id] = name

    def _release(self, trial_id: str) -> None:
        flight = self.flights.get(trial_id)
        if flight is None or flight.executor is None:
            return
        sweep = self.sweeps.get(flight.sweep_id)
        if sweep is not None:
            sweep.inflight.discard(trial_id)
        e = self.executors.get(flight.executor)
        if e is not None and trial_id in e.running:
            e.running.discard(trial_id)
            e.gpus_held = max(0, e.gpus_held - flight.gpus)
            e.busy = False  # a slot freed there
        flight.executor = None

    def _drop(self, trial_id: str) -> None:
        self._queue.pop(trial_id, None)
        self.flights.pop(trial_id, None)

    # ---- what a submit came back with ----

    def sent(self, trial_id: str, now: float, *, finished: bool) -> list[Action]:
        """The executor accepted the trial (``finished``: it had already ended there)."""
        flight = self.flights.get(trial_id)
        if flight is None or flight.phase is not Phase.SENDING or flight.executor is None:
            return []  # its end was committed while the submit was on its way
        e = self.executors[flight.executor]
        e.failures = 0
        e.down_until = 0.0
        self.reachable(e.name)
        flight.phase = Phase.SENT
        flight.heard_at = now
        actions: list[Action] = [
            Dispatched(
                trial_id=trial_id,
                sweep_id=flight.sweep_id,
                executor=e.name,
                latency=now - flight.queued_at,
            )
        ]
        if flight.cancel_pending:
            flight.cancel_pending = False
            if not finished:
                actions.append(
                    CancelOn(trial_id=trial_id, sweep_id=flight.sweep_id, executor=e.name)
                )
        return actions

    def send_busy(self, trial_id: str, now: float) -> list[Action]:
        """429: no free slot there. Not a failure: the trial waits at the head of the queue."""
        flight = self.flights.get(trial_id)
        if flight is None or flight.executor is None:
            return []
        executor = self.executors[flight.executor]
        actions = self.enqueue(
            flight.sweep_id,
            flight.start,
            now,
            front=True,
            only=flight.only,
            attempts=flight.attempts,
        )
        executor.busy = True  # after the release, which counts as a slot freed
        return actions

    def send_failed(
        self, trial_id: str, now: float, *, maybe_sent: bool, error: str
    ) -> list[Action]:
        """The executor could not be reached; ``maybe_sent``: the trial may have arrived."""
        flight = self.flights.get(trial_id)
        if flight is None or flight.executor is None:
            return []
        e = self.executors[flight.executor]
        e.failures += 1
        e.down_until = now + min(COOLDOWN_CAP, COOLDOWN_BASE * 2 ** (e.failures - 1))
        attempts = flight.attempts + 1
        # It may have arrived: sending it elsewhere could run it twice.
        only = e.name if maybe_sent else flight.only
        if flight.cancel_pending and maybe_sent:
            # Recorded as cancelled unsent below, yet it may run there: cancel it
            # once it answers, as for a lost trial.
            e.lost.add(trial_id)
        if attempts >= MAX_DISPATCH_ATTEMPTS:
            if maybe_sent:
                e.lost.add(trial_id)  # cancelled when it answers again
            self._release(trial_id)
            self._drop(trial_id)
            reason = f"no executor took the trial after {attempts} attempts; last: {error}"
            return [Fail(trial_id=trial_id, sweep_id=flight.sweep_id, reason=reason)]
        return self.enqueue(
            flight.sweep_id, flight.start, now, front=True, only=only, attempts=attempts
        )

    def send_refused(self, trial_id: str, reason: str) -> list[Action]:
        """The executor refused the trial (409, 422) or it could not be built: it fails."""
        flight = self.flights.get(trial_id)
        if flight is None:
            return []
        self._release(trial_id)
        self._drop(trial_id)
        return [Fail(trial_id=trial_id, sweep_id=flight.sweep_id, reason=reason)]

    # ---- what polling finds ----

    def not_found(self, trial_id: str, now: float) -> list[Action]:
        """A reachable executor does not know a sent trial: send it again (cannot run twice)."""
        flight = self.flights.get(trial_id)
        if flight is None or flight.phase is not Phase.SENT:
            return []
        return self.enqueue(flight.sweep_id, flight.start, now, front=True)

    def polls(self, now: float) -> list[Action]:
        """Silent trials to ask about, and trials whose executor stayed away too long."""
        actions: list[Action] = []
        for trial_id in sorted(self.flights):
            flight = self.flights[trial_id]
            if flight.phase is Phase.QUEUED and flight.only is not None:
                # Pinned (it may have arrived there, or its checkpoint is there) to an
                # executor gone lost_after: nothing else would ever end it.
                pinned = self.executors.get(flight.only)
                since = pinned.unreachable_since if pinned is not None else None
                if pinned is not None and since is not None and now - since >= self.lost_after:
                    self._queue.pop(trial_id, None)
                    actions.append(self._lose(flight, pinned, now, "it waited for it"))
                continue
            if flight.phase is not Phase.SENT or flight.executor is None:
                continue  # queued, its submit on its way, or already lost
            e = self.executors.get(flight.executor)
            if e is None:
                continue
            if not e.healthy:
                # Known down: no request until it answers a health check.
                since = e.unreachable_since
                if since is not None and now - since >= self.lost_after:
                    actions.append(self._lose(flight, e, now, "no answer"))
                continue
            if now - flight.heard_at >= self.silence:
                actions.append(Poll(trial_id=trial_id, sweep_id=flight.sweep_id, executor=e.name))
        return actions

    def poll_due(self, trial_id: str, now: float) -> bool:
        """Whether a Poll from ``polls`` still stands (polls before it take time: a result,
        a callback or a sick executor may have come in between)."""
        flight = self.flights.get(trial_id)
        if flight is None or flight.phase is not Phase.SENT or flight.executor is None:
            return False
        e = self.executors.get(flight.executor)
        return e is not None and e.healthy and now - flight.heard_at >= self.silence

    def poll_unreachable(self, trial_id: str, now: float, error: str) -> list[Action]:
        """A poll could not reach the trial's executor."""
        flight = self.flights.get(trial_id)
        if flight is None or flight.executor is None:
            return []
        e = self.executors[flight.executor]
        self.unreachable(e.name, now)  # its other trials skip this round
        since = e.unreachable_since
        if flight.phase is not Phase.SENT or since is None or now - since < self.lost_after:
            return []
        return [self._lose(flight, e, now, error)]

    def _lose(self, flight: Flight, e: ExecutorSlots, now: float, error: str) -> Lost:
        since = e.unreachable_since or now
        reason = f"lost: executor {e.name} unreachable for {now - since:.0f} s ({error})"
        flight.phase = Phase.LOST
        e.lost.add(flight.trial_id)  # a best-effort cancel once it answers again
        return Lost(trial_id=flight.trial_id, sweep_id=flight.sweep_id, reason=reason)

    # ---- read-only views ----

    def sending(self, trial_id: str) -> bool:
        flight = self.flights.get(trial_id)
        return flight is not None and flight.phase is Phase.SENDING

    def executor_of(self, trial_id: str) -> str | None:
        flight = self.flights.get(trial_id)
        if flight is not None and flight.executor is not None:
            return flight.executor
        return self._ran_on.get(trial_id)

    def inflight(self, sweep_id: str) -> set[str]:
        sweep = self.sweeps.get(sweep_id)
        return set(sweep.inflight) if sweep is not None else set()

    def queued(self) -> int:
        return len(self._queue)

    def queued_by_sweep(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial_id in self._queue:
            sweep_id = self.flights[trial_id].sweep_id
            counts[sweep_id] = counts.get(sweep_id, 0) + 1
        return counts

    def idle_reasons(self, now: float) -> dict[str, IdleReason | None]:
        """Why each open sweep leaves capacity unused (None: it does not)."""
        usable = [e for e in self.executors.values() if e.usable(now)]
        free = sum(e.free for e in usable)
        waiting: dict[str, list[Flight]] = {}
        for trial_id in self._queue:
            flight = self.flights[trial_id]
            waiting.setdefault(flight.sweep_id, []).append(flight)
        out: dict[str, IdleReason | None] = {}
        for sweep_id, sweep in self.sweeps.items():
            if sweep.open:
                out[sweep_id] = idle_reason(waiting.get(sweep_id, []), sweep, usable, free=free)
        return out


def idle_reason(
    waiting: list[Flight],
    sweep: SweepSlots,
    usable: list[ExecutorSlots],
    *,
    free: int,
) -> IdleReason | None:
    """The one idle-reason classifier (``capacity.idle`` events and ``/metrics``)."""
    running = len(sweep.inflight)
    if waiting:
        if not usable:
            return IdleReason.NO_EXECUTOR
        if sweep.concurrency is not None and running >= sweep.concurrency and free:
            return IdleReason.CONCURRENCY_CAP
        head = waiting[0]
        if (
            head.only is not None
            and free
            and all(e.name != head.only or not e.free for e in usable)
        ):
            return IdleReason.AFFINITY
        if head.gpus and free and not any(e.free and e.free_gpus >= head.gpus for e in usable):
            return IdleReason.GPU
        return None  # executors are full: busy, not idle
    if running and free:
        return IdleReason.RUNG_BARRIER
    return None


def idle_slots(placement: Placement, now: float) -> dict[IdleReason, int]:
    """Every executor's free slots counted under the reason they are free (``/metrics``).

    A free slot of an unusable executor (down, cooling down) is ``no_executor``;
    otherwise it takes the reason of the first open sweep that leaves capacity
    unused (by ``idle_reason``, in the order sweeps were opened), else
    ``no_work`` when nothing runs or waits at all.
    """
    counts = dict.fromkeys(IdleReason, 0)
    reasons = [r for r in placement.idle_reasons(now).values() if r is not None]
    waiting = bool(placement.queued())
    running = any(s.inflight for s in placement.sweeps.values())
    for e in placement.executors.values():
        if not e.usable(now):
            counts[IdleReason.NO_EXECUTOR] += e.free
        elif reasons:
            counts[reasons[0]] += e.free
        elif waiting:
            counts[IdleReason.CONCURRENCY_CAP] += e.free  # waiting, executors busy (429)
        elif running:
            counts[IdleReason.RUNG_BARRIER] += e.free
        else:
            counts[IdleReason.NO_WORK] += e.free
    return counts
