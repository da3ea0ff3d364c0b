"""Progress of one sweep while a command waits for it (`hbd run`, `hbd submit --wait`).

On a terminal: rich's live bar, with rung decisions printed above it. Anywhere
else (a pipe, a log file, CI): a plain line every ``PROGRESS_INTERVAL_SECONDS``
and one per rung decision, so a log shows the sweep moving, not a long silence
followed by the outcome. Both read the same thing: the sweep's detail, polled,
and its ``rung.decided``/``sweep.early_stopped`` events since the last poll.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from hbd.cli.base import format_number
from hbd.core.vocabulary import (
    FINAL_SWEEP_STATUSES,
    TERMINAL_TRIAL_STATUSES,
    EventType,
    SweepStatus,
    TrialStatus,
)

if TYPE_CHECKING:
    from hbd.client import Client, Event

# A plain progress line at most this often (rung decisions print at once):
# a line a minute would look stuck on a short sweep, one a second floods a log.
PROGRESS_INTERVAL_SECONDS = 10.0
# Trials queued and none running for this long: say the sweep waits for
# capacity (an executor down, busy or missing), once, instead of a silent bar.
CAPACITY_WAIT_SECONDS = 10.0
# How often the sweep is polled while waiting: what hbd.client.wait uses.
POLL_SECONDS = 0.5
ENDED_STATUSES = tuple(TERMINAL_TRIAL_STATUSES)
# Event types worth a line of their own.
DECISION_TYPES = (EventType.RUNG_DECIDED, EventType.SWEEP_EARLY_STOPPED)


def counts_line(detail: Mapping[str, Any]) -> str:
    """``12/22 trial runs ended (10 ok, 2 failed), 3 running, 4 queued; best loss=0.1``."""
    trials: Mapping[str, int] = detail.get("trials", {})
    ended = sum(trials.get(s, 0) for s in ENDED_STATUSES)
    parts = [f"{ended}/{detail.get('planned_trial_runs', '?')} trial runs ended"]
    if ended:
        parts[0] += f" ({trials.get('succeeded', 0)} ok, {trials.get('failed', 0)} failed)"
    running = trials.get(TrialStatus.RUNNING, 0) + trials.get(TrialStatus.DISPATCHED, 0)
    queued = trials.get(TrialStatus.SCHEDULED, 0)
    parts.append(f"{running} running, {queued} queued")
    best = detail.get("best")
    if best and best.get("metric") is not None:
        parts.append(f"best {detail['metric']['name']}={format_number(best['metric'])}")
    return ", ".join(parts)


def decision_line(event: Event) -> str:
    p = event.payload
    if event.type == EventType.RUNG_DECIDED:
        head = f"bracket {p.get('bracket')} rung {p.get('rung')} decided: "
        promoted, stopped = len(p.get("promoted") or ()), len(p.get("stopped") or ())
        if promoted or stopped:
            return head + (
                f"promoted {promoted}, stopped {stopped}, cutoff {format_number(p.get('cutoff'))}"
            )
        return head + str(p.get("reason") or "bracket done")
    reason = str(p.get("reason", ""))
    return reason if reason.startswith("early stopping") else f"early stopping: {reason}"


class SweepProgress:
    """Shows one sweep's progress; ``interactive`` (default: stdout is a terminal)
    picks the live bar over plain lines."""

    def __init__(
        self,
        sweep_id: str,
        *,
        interactive: bool | None = None,
        file: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = PROGRESS_INTERVAL_SECONDS,
    ) -> None:
        self.sweep_id = sweep_id
        self.file = file or sys.stdout
        self.interactive = self.file.isatty() if interactive is None else interactive
        self.clock = clock
        self.interval = interval
        self._last_line: float | None = None
        self._last_text = ""
        self._bar: Any = None
        self._task: Any = None
        self._starved_since: float | None = None  # queued trials, none running, since
        self._said_starved = False

    def __enter__(self) -> SweepProgress:
        if self.interactive:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn(f"sweep {self.sweep_id}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("trial runs  best {task.fields[best]}"),
                TimeElapsedColumn(),
                transient=True,
                console=Console(file=self.file, markup=False, highlight=False),
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("trials", total=None, best="-")
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(t, e, tb)
            self._bar = None

    def line(self, text: str) -> None:
        """A line of its own: above the bar, or timestamped in a log."""
        if self._bar is not None:
            self._bar.console.print(text, soft_wrap=True)
        else:
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp} sweep {self.sweep_id}: {text}", file=self.file, flush=True)

    def detail(self, detail: Mapping[str, Any]) -> None:
        self._watch_capacity(detail)
        if self._bar is not None:
            trials = detail.get("trials", {})
            best = detail["best"]["metric"] if detail.get("best") else None
            self._bar.update(
                self._task,
                total=detail.get("planned_trial_runs"),
                completed=sum(trials.get(s, 0) for s in ENDED_STATUSES),
                best="-" if best is None else format_number(best),
            )
            return
        now = self.clock()
        text = counts_line(detail)
        due = self._last_line is None or now - self._last_line >= self.interval
        if due and text != self._last_text:  # a stalled sweep does not repeat itself
            self._last_line, self._last_text = now, text
            self.line(text)

    def _watch_capacity(self, detail: Mapping[str, Any]) -> None:
        trials: Mapping[str, int] = detail.get("trials", {})
        running = trials.get(TrialStatus.RUNNING, 0) + trials.get(TrialStatus.DISPATCHED, 0)
        if (
            running
            or not trials.get(TrialStatus.SCHEDULED)
            or detail.get("status") != SweepStatus.RUNNING
        ):
            self._starved_since, self._said_starved = None, False
            return
        now = self.clock()
        if self._starved_since is None:
            self._starved_since = now
        elif not self._said_starved and now - self._starved_since >= CAPACITY_WAIT_SECONDS:
            self._said_starved = True
            self.line(
                f"waiting for capacity: {trials['scheduled']} trial run(s) queued, none running "
                f"for {CAPACITY_WAIT_SECONDS:g} s; are the executors up? (hbd doctor --url URL)"
            )

    def event(self, event: Event) -> None:
        if event.type in DECISION_TYPES:
            self.line(decision_line(event))


async def follow(client: Client, sweep_id: str, progress: SweepProgress) -> dict[str, Any]:
    """Poll ``sweep_id`` until it has finished, showing progress; its final detail."""
    import anyio

    after = 0
    while True:
        detail = await client.sweep(sweep_id)
        events = client.events(sweep_id, after=after, types=DECISION_TYPES, follow=False)
        async with aclosing(events) as stream:
            async for event in stream:
                after = event.seq
                progress.event(event)
        progress.detail(detail)
        if detail["status"] in FINAL_SWEEP_STATUSES:
            return detail
        await anyio.sleep(POLL_SECONDS)
