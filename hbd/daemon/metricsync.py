"""Every metrics line a trial wrote, logged once, in order, within bounds.

Executors number a trial's metrics lines 1, 2, 3... (``MetricsLine.seq``) and
push them in batches by callback; callbacks are best effort (dropped when the
daemon is slow or down). So the daemon treats callbacks as hints and the
executor's numbering as the truth:

- :class:`MetricsLedger` (owned by a sweep's runner) knows, per unfinished
  trial, the last seq logged and the metric keys admitted. It turns a batch
  into ``trial.metrics`` records only for the lines that continue the log
  exactly (seq = last + 1, ...); repeats are skipped, a gap ends the batch.
  The store refuses a repeated (trial, seq) again (``metrics_lines`` table).
- :class:`MetricsSync` (owned by the daemon) hands lines to the runner and,
  whenever an executor says a trial has more lines than were handed over (a
  callback with a gap, a status whose ``metrics_seq`` is ahead, after a
  restart of either side), fetches the missing ones with
  ``GET /v1/trials/{id}/metrics?after=SEQ`` page by page, before the trial's
  result is handed over, so the log holds the lines before the verdict.

Bounds, whatever the executor sends: at most ``MAX_METRIC_KEYS`` keys per
trial (first seen win, the sweep's metric always kept), keys of at most
``MAX_METRIC_KEY_BYTES``, finite numbers only. The ``trials`` row merge is
then over at most that many keys, never over a trial's whole history.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import structlog

from hbd.core.codec import Record
from hbd.daemon.lifecycle import TRIAL_METRICS
from hbd.errors import ExecutorError, ExecutorRejected, NotFound
from hbd.protocol import MAX_METRIC_KEY_BYTES, MAX_METRIC_KEYS, MAX_METRICS_PAGE_LINES, MetricsLine

if TYPE_CHECKING:
    from hbd.daemon.backend import ExecutorBackend

log = structlog.get_logger(__name__)

# Pages fetched for one trial in one go (each must bring new lines, so an
# executor cannot keep us looping): 10M lines, more than the agent's default
# file cap (64 MiB) holds even of the smallest lines (8 bytes, '{"a":1}').
# A trial with more is caught up by its next status or callback.
MAX_FETCH_PAGES = 10_000
# Times a finished trial's verdict is held back because its missing lines could
# not be fetched (the executor unreachable, a page that stops short): each
# hold waits for the reconciler to poll the trial again (about
# placement.SILENCE seconds), so ~6 tries span half a minute of a flaky
# executor; after that the verdict is logged anyway, with a warning naming the
# lines lost, so an executor that really lost them cannot hang a sweep.
MAX_VERDICT_HOLDS = 6


@dataclass(frozen=True, slots=True)
class MetricsLines:
    """A runner inbox item: consecutive metrics lines of one trial."""

    trial_id: str
    lines: tuple[MetricsLine, ...]
    # The trial's run: a trial run again (hbd interrupted under it) numbers its
    # lines from 1 again; its records carry ``run`` and a new run resets the count.
    run: int = 1


def bounded(
    metrics: Mapping[str, Any], keys: set[str], cap: int = MAX_METRIC_KEYS
) -> dict[str, float]:
    """Finite numbers under admitted keys; a new key is admitted while ``keys`` is below ``cap``."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        try:
            number = float(value)
        except OverflowError:
            continue
        if not math.isfinite(number):
            continue
        if key not in keys:
            if (
                len(keys) >= cap
                or len(key.encode("utf-8", errors="replace")) > MAX_METRIC_KEY_BYTES
            ):
                continue
            keys.add(key)
        out[key] = number
    return out


class MetricsLedger:
    """Per unfinished trial: the last logged metrics seq and the admitted keys."""

    def __init__(self, metric: str | None) -> None:
        self.metric = metric  # the sweep's metric: admitted first, never dropped
        self._last: dict[str, int] = {}
        self._keys: dict[str, set[str]] = {}
        self._run: dict[str, int] = {}

    def load(self, state: Mapping[str, tuple[int, Iterable[str], int]]) -> None:
        """Start again from the log's view (on start, and after a failed write)."""
        self._run = {tid: run for tid, (_, _, run) in state.items()}
        self._last = {tid: last for tid, (last, _, _) in state.items()}
        base = {self.metric} if self.metric else set()
        self._keys = {tid: base | set(keys) for tid, (_, keys, _) in state.items()}

    def last_seq(self, trial_id: str, run: int = 1) -> int:
        """The last logged line of the trial's ``run`` (0 for a run not seen yet)."""
        if run > self._run.get(trial_id, 1):
            return 0
        return self._last.get(trial_id, 0)

    def run(self, trial_id: str) -> int:
        """The run whose lines the log holds last for the trial (1 before any)."""
        return self._run.get(trial_id, 1)

    def forget(self, trial_id: str) -> None:
        self._last.pop(trial_id, None)
        self._keys.pop(trial_id, None)
        self._run.pop(trial_id, None)

    def records(self, item: MetricsLines) -> list[Record]:
        """``trial.metrics`` records for the lines that continue the trial's log."""
        trial_id = item.trial_id
        run = self._run.get(trial_id, 1)
        if item.run < run:
            return []  # lines of an earlier run, arriving late
        if item.run > run:  # a new run counts from 1 with keys of its own
            self._run[trial_id] = item.run
            self._last.pop(trial_id, None)
            self._keys.pop(trial_id, None)
        last = self._last.get(trial_id, 0)
        keys = self._keys.get(trial_id)
        if keys is None:
            keys = self._keys[trial_id] = {self.metric} if self.metric else set()
        out: list[Record] = []
        for line in item.lines:
            if line.seq <= last:
                continue  # logged already (a callback and a fetch crossed)
            if line.seq != last + 1:
                log.info("metrics lines out of order; the rest is fetched", trial_id=trial_id)
                break
            last = line.seq
            payload: dict[str, Any] = {
                "trial_id": trial_id,
                "seq": line.seq,
                "metrics": bounded(line.metrics, keys),
            }
            if item.run != 1:
                payload["run"] = item.run
            out.append((TRIAL_METRICS, payload))
        self._last[trial_id] = last
        return out


class LineSink(Protocol):
    """A sweep's runner as metrics sync sees it: its ledger and its inbox."""

    @property
    def metrics(self) -> MetricsLedger: ...

    @property
    def metrics_loaded(self) -> anyio.Event: ...

    async def put(self, item: MetricsLines) -> None: ...


class MetricsSync:
    """Hands metrics lines to runners in order, fetching what callbacks did not bring."""

    def __init__(self, executor_of: Callable[[str], ExecutorBackend | None]) -> None:
        # Only this of the daemon: where a trial runs (its lines are fetched there).
        self._executor_of = executor_of
        self._locks: dict[str, anyio.Lock] = {}
        self._handed: dict[str, tuple[int, int]] = {}  # (run, seq) of the last line handed over
        self._holds: dict[str, int] = {}  # verdicts held back per trial (MAX_VERDICT_HOLDS)

    def forget(self, trial_id: str) -> None:
        self._locks.pop(trial_id, None)
        self._handed.pop(trial_id, None)
        self._holds.pop(trial_id, None)

    def hold_verdict(self, trial_id: str, missing: int) -> bool:
        """A finished trial lacks ``missing`` lines: True to wait for its next status.

        False once MAX_VERDICT_HOLDS were spent (or the executor cannot serve
        the lines at all): the verdict goes on and the lines are lost, said loudly.
        """
        held = self._holds.get(trial_id, 0)
        if held < MAX_VERDICT_HOLDS:
            self._holds[trial_id] = held + 1
            log.info(
                "trial finished with metrics lines missing; its verdict waits for them",
                trial_id=trial_id,
                missing=missing,
                held=held + 1,
            )
            return True
        log.warning(
            "metrics lines lost: the executor did not serve them; logging the verdict anyway",
            trial_id=trial_id,
            missing=missing,
        )
        return False

    async def deliver(
        self,
        runner: LineSink,
        trial_id: str,
        lines: list[MetricsLine],
        upto: int,
        run: int = 1,
    ) -> int:
        """Hand over ``lines`` of the trial's ``run`` and anything missing up to seq ``upto``.

        ``run`` is the run the executor says the lines are of (not the machine's
        current run: an adopted run that succeeded before hbd was interrupted is
        one behind it), so they are logged under it, or dropped if a later run
        already logged lines. Returns how many lines up to ``upto`` are still
        missing (0: all handed over, or nothing is wanted of this run).
        """
        if not lines and upto <= 0:
            return 0
        await runner.metrics_loaded.wait()
        lock = self._locks.setdefault(trial_id, anyio.Lock())
        async with lock:
            if run < runner.metrics.run(trial_id):
                log.info("metrics lines of an earlier run dropped", trial_id=trial_id, run=run)
                return 0
            handed_run, handed = self._handed.get(trial_id, (run, 0))
            have = max(runner.metrics.last_seq(trial_id, run), handed if handed_run == run else 0)
            fresh = [line for line in lines if line.seq > have]
            if fresh and fresh[0].seq == have + 1:
                batch = [fresh[0]]
                for line in fresh[1:]:
                    if line.seq != batch[-1].seq + 1:
                        break
                    batch.append(line)
                await runner.put(MetricsLines(trial_id, tuple(batch), run))
                have = batch[-1].seq
            target = max(upto, fresh[-1].seq if fresh else 0)
            if have < target:
                have = await self._fetch(runner, trial_id, run, have, target)
            self._handed[trial_id] = (run, have)
            return max(0, upto - have)

    async def _fetch(
        self, runner: LineSink, trial_id: str, run: int, have: int, target: int
    ) -> int:
        """Fetch lines after ``have`` up to ``target`` from the trial's executor; the new ``have``."""
        executor = self._executor_of(trial_id)
        if executor is None:
            return have
        for _ in range(MAX_FETCH_PAGES):
            try:
                page = await executor.metrics(trial_id, after=have, limit=MAX_METRICS_PAGE_LINES)
            except (NotFound, ExecutorRejected) as exc:
                # An executor without the metrics route (or that forgot the trial, or
                # answers with something that is not a page): asking again cannot
                # help, so a finished trial's verdict need not wait. Only an
                # unreachable executor (ExecutorUnavailable) is asked again.
                log.info(
                    "executor cannot serve missing metrics lines", trial_id=trial_id, error=str(exc)
                )
                self._holds[trial_id] = MAX_VERDICT_HOLDS
                return have
            except ExecutorError as exc:
                log.warning(
                    "cannot fetch missing metrics lines; will retry with the next status or poll",
                    trial_id=trial_id,
                    executor=executor.describe(),
                    after=have,
                    error=str(exc),
                )
                return have
            if page.run != run:
                # The executor moved on to another run of the trial: its lines are not these.
                log.info(
                    "metrics page of another run; not logged",
                    trial_id=trial_id,
                    run=run,
                    page_run=page.run,
                )
                return have
            lines = [line for line in page.lines if line.seq > have]
            if not lines or lines[0].seq != have + 1:
                return have
            await runner.put(MetricsLines(trial_id, tuple(lines), run))
            have = lines[-1].seq
            if have >= target:
                break
        return have


__all__ = ["MAX_VERDICT_HOLDS", "MetricsLedger", "MetricsLines", "MetricsSync", "bounded"]
