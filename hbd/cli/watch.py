"""``hbd watch`` (a live view of one sweep) and ``hbd events`` (the raw event stream).

Both read the daemon's event stream (``GET /v1/events``, docs/events.md)
through :meth:`hbd.client.Client.events`, which reconnects by itself; ``watch``
folds the events into the view, so what it shows is what the log says.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hbd.cli.base import EXIT_FAILURE, EXIT_OK, Command, UserError, format_config, format_number
from hbd.cli.remote import add_connection_args, call
from hbd.core.vocabulary import (
    LIVE_SWEEP_STATUSES,
    TERMINAL_EVENT_TYPES,
    EventType,
    SweepStatus,
    TrialStatus,
)

if TYPE_CHECKING:  # imported where used: `hbd --help` must not load rich or httpx
    from rich.console import RenderableType

    from hbd.client import Client, Event
    from hbd.core.scheduler import BracketOrder

# Lines of recent decisions under the brackets; running trials listed at most.
RECENT_DECISIONS = 8
RUNNING_SHOWN = 10
# Redraws of the live view per second: smooth enough, cheap for a terminal.
REFRESH_PER_SECOND = 4
ENDED = frozenset(TERMINAL_EVENT_TYPES)


# ---------------------------------------------------------------- hbd events


def _args_events(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", nargs="?", default=None, help="a sweep id (default: every sweep)")
    p.add_argument("--json", action="store_true", help="one JSON object per event, one per line")
    p.add_argument(
        "--after", type=int, default=None, metavar="SEQ", help="start after this event seq"
    )
    p.add_argument(
        "--type",
        action="append",
        default=None,
        metavar="T",
        dest="types",
        help="only events of this type (repeatable); see docs/events.md",
    )
    p.add_argument("--no-follow", action="store_true", help="stop at the current end of the log")
    add_connection_args(p)


def summary(event: Event) -> str:
    """One human line of an event's payload: the fields a person looks at first."""
    p = event.payload
    t = event.type
    if t == EventType.TRIAL_SCHEDULED:
        return f"b{p['bracket']} r{p['rung']} resource={p['resource']} {format_config(p.get('config', {}))}"
    if t in (EventType.TRIAL_DISPATCHED, EventType.TRIAL_RUNNING):
        return f"on {p.get('executor')}"
    if t == EventType.TRIAL_METRICS:
        return format_config(p.get("metrics", {}))
    if t == EventType.TRIAL_SUCCEEDED:
        return format_config(p.get("metrics", {}))
    if t in (EventType.TRIAL_FAILED, EventType.TRIAL_CANCELLED, EventType.SWEEP_STOP_REQUESTED):
        return str(p.get("reason", ""))
    if t == EventType.RUNG_DECIDED:
        return (
            f"b{p['bracket']} r{p['rung']} cutoff={format_number(p.get('cutoff'))} "
            f"promoted={len(p.get('promoted', []))} stopped={len(p.get('stopped', []))}"
        )
    if t == EventType.RUNG_STARTED:
        return f"b{p['bracket']} r{p['rung']} trials={p['trials']} resource={p['resource']}"
    if t == EventType.BRACKET_STARTED:
        return f"b{p['bracket']} trials={p['trials']}"
    if t == EventType.CAPACITY_IDLE:
        return f"{p['reason']}: queued={p['queued']} running={p['running']} free={p['free_slots']}"
    if t == EventType.SWEEP_EARLY_STOPPED:
        return f"{p.get('condition')}: {p.get('reason')}"
    if t == EventType.SWEEP_FINISHED:
        best = p.get("best") or {}
        return f"{p['status']}: {p.get('reason', '')}" + (
            f" best={best.get('trial_id')} metric={format_number(best.get('metric'))}"
            if best
            else ""
        )
    if t == EventType.TRIAL_CANCEL_REQUESTED:
        return f"{len(p.get('trial_ids', []))} trial(s): {p.get('reason', '')}"
    if t == EventType.SWEEP_SUBMITTED:
        return f"name={p.get('name') or '-'} seed={p.get('seed')}"
    return ""


def cmd_events(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    console = Console(file=sys.stdout, markup=False, highlight=False, soft_wrap=True)

    async def stream(client: Client) -> None:
        events = client.events(
            args.sweep, after=args.after, types=args.types, follow=not args.no_follow
        )
        async with aclosing(events) as it:
            async for event in it:
                if args.json:
                    sys.stdout.write(
                        json.dumps(
                            {
                                "seq": event.seq,
                                "type": event.type,
                                "sweep_id": event.sweep_id,
                                "trial_id": event.trial_id,
                                "at": event.at,
                                "payload": event.payload,
                            }
                        )
                        + "\n"
                    )
                    sys.stdout.flush()
                else:
                    when = time.strftime("%H:%M:%S", time.localtime(event.at))
                    sweep = "" if args.sweep else f"{event.sweep_id} "
                    trial = f"{event.trial_id} " if event.trial_id else ""
                    console.print(
                        Text(
                            f"{event.seq:>7} {when} {sweep}{event.type:<22} {trial}{summary(event)}"
                        )
                    )

    call(args, stream)
    return EXIT_OK


# ---------------------------------------------------------------- hbd watch


@dataclass
class RungView:
    planned: int
    resource: Any
    scheduled: int = 0
    ended: int = 0
    decided: str | None = None


@dataclass
class WatchState:
    """The live view's model: the sweep's plan, folded with its events."""

    sweep_id: str
    metric: str
    minimize: bool
    rungs: dict[tuple[int, int, int], RungView]  # (iteration, bracket, rung)
    status: str = SweepStatus.RUNNING
    trials: dict[str, dict[str, Any]] = field(default_factory=dict)
    running: dict[str, str] = field(default_factory=dict)  # trial id -> state
    # The best run at the highest resource reached (hbd.core.sweep's rule):
    # (resource, metric, trial id).
    best: tuple[float, float, str] | None = None
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_DECISIONS))
    last_seq: int = 0
    idle: str | None = None
    unreachable: str | None = None  # why the daemon cannot be heard, while it cannot
    order: BracketOrder = "hyperband"  # the brackets' order within an iteration (its record)

    @classmethod
    def from_detail(cls, detail: Mapping[str, Any]) -> WatchState:
        rungs = {
            (b.get("iteration", 0), b["bracket"], r["rung"]): RungView(
                planned=r["planned"], resource=r["resource"]
            )
            for b in detail["brackets"]
            for r in b["rungs"]
        }
        metric = detail["metric"]
        return cls(
            sweep_id=detail["id"],
            metric=metric["name"],
            minimize=metric.get("optimization", "minimize") == "minimize",
            rungs=rungs,
            order=(
                "ascending-after-first"
                if detail.get("bracket_order") == "ascending-after-first"
                else "hyperband"
            ),
        )

    def apply(self, event: Event) -> None:
        self.last_seq = event.seq
        self.unreachable = None
        p, t, tid = event.payload, event.type, event.trial_id
        if t == EventType.TRIAL_SCHEDULED and tid:
            self.trials[tid] = p
            rung = self._rung(p)
            if rung is not None:
                rung.scheduled += 1
            self.running[tid] = "queued"
        elif t in (EventType.TRIAL_DISPATCHED, EventType.TRIAL_RUNNING) and tid in self.running:
            self.running[tid] = TrialStatus(t.removeprefix("trial."))
            self.idle = None
        elif t in ENDED and tid:
            self.running.pop(tid, None)
            info = self.trials.get(tid, {})
            rung = self._rung(info)
            if rung is not None:
                rung.ended += 1
            value, resource = p.get("metric"), info.get("resource")
            if (
                t == EventType.TRIAL_SUCCEEDED
                and isinstance(value, int | float)
                and isinstance(resource, int | float)
            ):
                self._offer_best(float(resource), float(value), tid)
            if t == EventType.TRIAL_FAILED:
                self.recent.append(f"{tid} failed: {p.get('reason', '')}")
        elif t == EventType.RUNG_DECIDED:
            rung = self._rung(p)
            where = f"iteration {p['iteration']} " if p.get("iteration") else ""
            line = f"{where}bracket {p['bracket']} rung {p['rung']}: " + (
                f"promoted {len(p.get('promoted', []))}, stopped {len(p.get('stopped', []))}, "
                f"cutoff {format_number(p.get('cutoff'))}"
                if p.get("promoted") or p.get("stopped")
                else str(p.get("reason", "decided"))
            )
            if rung is not None:
                rung.decided = f"cutoff {format_number(p.get('cutoff'))}"
            self.recent.append(line)
        elif t == EventType.CAPACITY_IDLE:
            self.idle = f"{p['reason']}: {p.get('detail', '')}"
        elif t in (EventType.SWEEP_EARLY_STOPPED, EventType.SWEEP_STOP_REQUESTED):
            self.recent.append(f"{t.removeprefix('sweep.')}: {p.get('reason', '')}")
            self.status = SweepStatus.STOPPING
        elif t == EventType.SWEEP_FINISHED:
            self.status = str(p.get("status"))
            self.recent.append(summary(event))
            self.running.clear()

    def _rung(self, p: Mapping[str, Any]) -> RungView | None:
        """The rung of a trial or decision; an iteration added by ``hbd extend``
        gets its rungs on first sight, planned as the first iteration's."""
        it, b, r = p.get("iteration") or 0, p.get("bracket"), p.get("rung")
        if not isinstance(b, int) or not isinstance(r, int):
            return None
        rung = self.rungs.get((it, b, r))
        first = self.rungs.get((0, b, r))
        if rung is None and first is not None:
            rung = self.rungs[(it, b, r)] = RungView(planned=first.planned, resource=first.resource)
        return rung

    def _place(self, iteration: int, bracket: int, rung: int) -> tuple[int, int, int]:
        """Where a rung is listed: by iteration, then the order its brackets run in."""
        from hbd.core.scheduler import run_order

        plan = sorted({b for _, b, _ in self.rungs}, reverse=True)  # Hyperband's order
        return iteration, run_order(plan, self.order, iteration).index(bracket), rung

    def _offer_best(self, resource: float, value: float, tid: str) -> None:
        if self.best is not None:
            top, current = self.best[0], self.best[1]
            if resource < top:
                return
            if resource == top and not (value < current if self.minimize else value > current):
                return
        self.best = (resource, value, tid)

    def render(self) -> RenderableType:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        head = Text(f"sweep {self.sweep_id}  {self.status}  (event {self.last_seq})", style="bold")
        table = Table(box=None, pad_edge=False)
        several = any(it for it, _, _ in self.rungs)
        for col in ("iteration",) * several + (
            "bracket",
            "rung",
            "resource",
            "progress",
            "done",
            "",
        ):
            table.add_column(col)
        for (it, b, r), rung in sorted(self.rungs.items(), key=lambda kv: self._place(*kv[0])):
            table.add_row(
                *(str(it),) * several,
                str(b),
                str(r),
                str(rung.resource),
                ProgressBar(total=max(rung.planned, 1), completed=rung.ended, width=30),
                f"{rung.ended}/{rung.planned}",
                rung.decided or "",
            )
        parts: list[RenderableType] = [head]
        if self.unreachable:
            parts.append(
                Text(f"daemon unreachable: {self.unreachable}; retrying", style="bold red")
            )
        parts.append(table)
        if self.best is not None:
            resource, value, tid = self.best
            config = format_config(self.trials.get(tid, {}).get("config", {}))
            parts.append(
                Text(
                    f"best {self.metric} {format_number(value)} at resource"
                    f" {format_number(resource)}  {tid}  {config}"
                )
            )
        active = {tid: state for tid, state in self.running.items() if state != "queued"}
        queued = len(self.running) - len(active)
        if active:
            parts.append(Text(f"running ({len(active)}):", style="bold"))
            for tid, state in list(active.items())[:RUNNING_SHOWN]:
                info = self.trials.get(tid, {})
                parts.append(
                    Text(
                        f"  {tid} {state} resource={info.get('resource')} "
                        f"{format_config(info.get('config', {}))}"
                    )
                )
        if queued:
            parts.append(Text(f"queued: {queued} trial run(s) waiting for a free slot"))
        if self.idle and self.status == SweepStatus.RUNNING:
            parts.append(Text(f"idle slots: {self.idle}"))
        if self.recent:
            parts.append(Text("recent decisions:", style="bold"))
            parts.extend(Text(f"  {line}") for line in self.recent)
        return Group(*parts)


def _args_watch(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "sweep", nargs="?", default=None, help="a sweep id (default: the newest running sweep)"
    )
    add_connection_args(p)


def cmd_watch(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console(file=sys.stdout)

    async def watch(client: Client) -> str:
        sweep_id = args.sweep
        if sweep_id is None:
            running = [s for s in await client.sweeps() if s["status"] in LIVE_SWEEP_STATUSES]
            if not running:
                raise UserError("no sweep is running; name one: hbd watch SWEEP")
            sweep_id = max(running, key=lambda s: s.get("created_at") or 0)["id"]
        state = WatchState.from_detail(await client.sweep(sweep_id))
        with Live(
            state.render(), console=console, refresh_per_second=REFRESH_PER_SECOND, transient=False
        ) as live:

            def unreachable(problem: str) -> None:
                state.unreachable = problem
                live.update(state.render())

            stream = client.events(sweep_id, after=0, on_retry=unreachable)
            async with aclosing(stream) as events:
                async for event in events:
                    state.apply(event)
                    live.update(state.render())
        return state.status

    status = call(args, watch)
    return EXIT_OK if status in (SweepStatus.SUCCEEDED, SweepStatus.STOPPED) else EXIT_FAILURE


COMMANDS: tuple[Command, ...] = (
    Command(
        "watch", "watch a sweep live: rungs, running trials, best so far", _args_watch, cmd_watch
    ),
    Command(
        "events", "print the daemon's event stream (all sweeps, or one)", _args_events, cmd_events
    ),
)
