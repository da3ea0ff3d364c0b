"""Thin clients of the daemon's API: submit, status, trials, results, cancel.

``status``, ``trials`` and ``results`` read a database directly with ``--db``
(read-only; hbd.cli.localdb) when no daemon runs, as Optuna's CLI reads
``--storage``. Output for scripts is never truncated: off a terminal, tables
print as tab-separated lines (hbd.cli.base.Output.rows).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hbd.cli.base import (
    EXIT_FAILURE,
    EXIT_OK,
    MAX_FAILURES_SHOWN,
    Command,
    UserError,
    format_config,
    format_number,
    output,
    print_json,
    read_spec_text,
    say,
    warn,
)
from hbd.cli.remote import add_connection_args, add_source_args, call, call_source
from hbd.core.vocabulary import (
    FINAL_SWEEP_STATUSES,
    LIVE_SWEEP_STATUSES,
    EventType,
    SweepStatus,
    TrialStatus,
)

if TYPE_CHECKING:
    from hbd.cli.localdb import Source
    from hbd.client import Client

# Fields of `hbd results` that scripts rely on, in this order for csv; then
# one `metrics.NAME` column per metric any trial reported.
RESULT_FIELDS = (
    "id",
    "bracket",
    "rung",
    "config",
    "resource",
    "status",
    "metric",
    "parent",
    "started_at",
    "ended_at",
    "duration",
)
TRIAL_FIELDS = ("id", "bracket", "rung", "resource", "status", "metric", "config", "reason")
# The last lines of a failed trial's stderr shown under a failed sweep.
STDERR_LINES_SHOWN = 8
# Metric names listed when the sweep's metric is missing.
MAX_METRICS_SHOWN = 10


# ---------------------------------------------------------------- submit


def _args_submit(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="sweep spec (YAML or JSON); '-' reads stdin")
    p.add_argument(
        "--id", default=None, help="sweep id to use (resubmitting the same spec is a no-op)"
    )
    p.add_argument(
        "--wait", action="store_true", help="show progress and return when the sweep has finished"
    )
    add_connection_args(p)


def cmd_submit(args: argparse.Namespace) -> int:
    from hbd.core.spec import spec_warnings, sweep_id_problem

    if args.id is not None and (problem := sweep_id_problem(args.id)):
        raise UserError(f"--id: {problem}")
    # Validated here first: the same errors as the daemon's, without a round trip.
    text, spec = read_spec_text(args.file)
    spec_lines = spec_warnings(spec)
    for line in spec_lines:
        warn(line)

    async def submit(client: Client) -> tuple[dict[str, Any] | None, list[str]]:
        from hbd.cli.progress import SweepProgress, follow

        answer = await client.submit_answer(text, sweep_id=args.id)
        sweep_id = str(answer["id"])
        print(sweep_id, flush=True)
        # The answer repeats the spec's warnings (shown above); the rest are the daemon's.
        warnings = [str(w) for w in answer.get("warnings") or () if str(w) not in spec_lines]
        for w in warnings:
            warn(w)
        if not args.wait:
            return None, []
        with SweepProgress(sweep_id) as progress:
            if warnings:
                progress.line("waiting for capacity: " + "; ".join(warnings))
            detail = await follow(client, sweep_id, progress)
        return detail, await failure_report(client, detail)

    detail, why = call(args, submit)
    if detail is None:
        return EXIT_OK
    print_outcome(detail, why)
    return EXIT_OK if detail["status"] == SweepStatus.SUCCEEDED else EXIT_FAILURE


# ---------------------------------------------------------------- outcome and why


def print_outcome(detail: Mapping[str, Any], why: Sequence[str] = ()) -> None:
    out = output()
    out.line(f"sweep {detail['id']} {detail['status']}: {detail.get('reason') or ''}".rstrip(": "))
    best = detail.get("best")
    if best:
        metric = detail["metric"]["name"]
        label = "best" if detail["status"] in FINAL_SWEEP_STATUSES else "best so far"
        out.line(
            f"{label}: {metric}={format_number(best['metric'])} at {detail['resource']['name']}={best['resource']}"
            f" (bracket {best['bracket']}, rung {best['rung']}, trial {best['id']})"
        )
        out.line(f"config: {format_config(best['config'])}")
    for line in why:
        out.line(line)


def explain(
    detail: Mapping[str, Any],
    trials: Sequence[Mapping[str, Any]],
    failed_event: Mapping[str, Any] | None,
) -> list[str]:
    """Why a sweep went as it did, in lines: its failures' top reasons with
    counts, one failed trial's last stderr lines and how to read its logs, and
    the metrics trials did report when none reported the sweep's."""
    lines: list[str] = []
    metric = detail["metric"]["name"]
    failed = [t for t in trials if t["status"] == TrialStatus.FAILED]
    if failed:
        reasons = Counter(str(t.get("reason") or "failed") for t in failed)
        lines.append(f"{len(failed)} of {len(trials)} trial runs failed; most common reasons:")
        # most_common keeps first-seen order among equal counts: deterministic.
        for reason, n in reasons.most_common(MAX_FAILURES_SHOWN):
            lines.append(f"  {n:>4} x {reason}")
        if len(reasons) > MAX_FAILURES_SHOWN:
            lines.append(f"  ... and {len(reasons) - MAX_FAILURES_SHOWN} other reasons")
        first = failed_event or {}
        tid = first.get("trial_id") or failed[0]["id"]
        tail = str((first.get("payload") or {}).get("stderr_tail") or "").rstrip()
        if tail:
            lines.append(f"last lines of trial {tid}'s stderr:")
            lines.extend(f"  | {ln}" for ln in tail.splitlines()[-STDERR_LINES_SHOWN:])
        lines.append(f"its logs: hbd logs {tid} --stderr")
    if detail.get("best") is None and detail["status"] != SweepStatus.RUNNING:
        seen: Counter[str] = Counter()
        for t in trials:
            seen.update(k for k in (t.get("metrics") or {}) if k != metric)
        if seen:
            names = ", ".join(f"{k} ({n})" for k, n in seen.most_common(MAX_METRICS_SHOWN))
            lines.append(
                f"no trial reported {metric!r}; trials reported: {names}. "
                f"Is matrix.metric.name right?"
            )
        elif any(
            t["status"] == TrialStatus.SUCCEEDED or "never reported" in str(t.get("reason") or "")
            for t in trials
        ):  # they ran to the end: the metric is what is missing
            lines.append(
                f"trials reported no metrics: report {metric!r} with hbd.report(...) or "
                "a JSON line appended to $HBD_METRICS_FILE (README: Trials)"
            )
    return lines


async def failure_report(source: Any, detail: Mapping[str, Any]) -> list[str]:
    """``explain`` for a sweep that did not simply succeed, read through ``source``
    (a Client or a local database); nothing when all went well."""
    counts = detail.get("trials", {})
    if detail["status"] == SweepStatus.SUCCEEDED and not counts.get(TrialStatus.FAILED):
        return []
    if detail["status"] in LIVE_SWEEP_STATUSES and not counts.get(TrialStatus.FAILED):
        return []
    from contextlib import aclosing

    trials = await source.trials(detail["id"])
    first: dict[str, Any] | None = None
    events = source.events(detail["id"], after=0, types=[EventType.TRIAL_FAILED], follow=False)
    async with aclosing(events) as stream:
        async for event in stream:
            if first is None:
                first = {"trial_id": event.trial_id, "payload": event.payload}
            if event.payload.get("stderr_tail"):
                first = {"trial_id": event.trial_id, "payload": event.payload}
                break
    return explain(detail, trials, first)


# ---------------------------------------------------------------- status


def _args_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", nargs="?", help="a sweep id (default: list all sweeps)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_source_args(p)


def cmd_status(args: argparse.Namespace) -> int:
    if args.sweep is None:

        async def listing(source: Source) -> list[dict[str, Any]]:
            sweeps = await source.sweeps()
            for s in sweeps:  # the list says the best only once finished: ask the live ones
                if s["status"] in LIVE_SWEEP_STATUSES and s.get("best_metric") is None:
                    best = (await source.sweep(s["id"])).get("best")
                    s["best_metric"] = best["metric"] if best else None
            return sweeps

        sweeps = call_source(args, listing)
        if args.json:
            print(json.dumps(sweeps, indent=2))
            return EXIT_OK
        output().rows(
            ("id", "name", "status", "best", "reason"),
            [
                (
                    s["id"],
                    s["name"] or "",
                    s["status"],
                    format_number(s["best_metric"]),
                    s["reason"] or "",
                )
                for s in sweeps
            ],
        )
        return EXIT_OK

    async def one(source: Source) -> tuple[dict[str, Any], list[str]]:
        detail = await source.sweep(args.sweep)
        return detail, await failure_report(source, detail)

    detail, why = call_source(args, one)
    if args.json:
        print_json(detail)
        return EXIT_OK
    out = output()
    counts = ", ".join(f"{n} {s}" for s, n in sorted(detail["trials"].items())) or "none yet"
    out.line(
        f"sweep {detail['id']} ({detail['name'] or 'unnamed'}): {detail['status']}; trials: {counts}"
    )
    rows = []
    several = (detail.get("iterations") or 1) > 1  # older daemons: one iteration
    for b in detail["brackets"]:
        for r in b["rungs"]:
            by = ", ".join(f"{n} {s}" for s, n in sorted(r["by_status"].items()))
            rows.append(
                (
                    *(str(b.get("iteration", 0)),) * several,
                    str(b["bracket"]),
                    str(r["rung"]),
                    str(r["resource"]),
                    str(r["planned"]),
                    str(r["trials"]),
                    by,
                )
            )
    head = ("iteration",) * several + ("bracket", "rung", "resource", "planned", "trials")
    out.rows((*head, "by status"), rows)
    ckpt = detail.get("checkpoints")  # absent from older daemons
    if ckpt and (ckpt.get("deleted") or ckpt.get("kept")):
        kept = f"{ckpt.get('kept', 0)} kept"
        if ckpt.get("kept_bytes") is not None:  # measured: a shared path or URL store
            kept += f" holding {format_bytes(int(ckpt['kept_bytes']))}"
        out.line(
            f"checkpoints: {kept}, {ckpt.get('deleted', 0)} deleted, "
            f"{format_bytes(int(ckpt.get('freed_bytes') or 0))} freed"
        )
    per_resource = detail.get("best_per_resource") or []
    if per_resource:
        metric = detail["metric"]["name"]
        out.line(f"best per {detail['resource']['name']} (the sweep's best is the last):")
        out.rows(
            (detail["resource"]["name"], metric, "trial"),
            [(str(t["resource"]), format_number(t["metric"]), t["id"]) for t in per_resource],
        )
    print_outcome(detail, why)
    return EXIT_OK


def format_bytes(n: int) -> str:
    """``1234567`` -> ``1.2 MB (1234567 bytes)``: readable, and exact for scripts and tests."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


# ---------------------------------------------------------------- trials


def _args_trials(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep")
    p.add_argument("--status", default=None, choices=tuple(TrialStatus))
    p.add_argument("--bracket", type=int, default=None)
    p.add_argument("--rung", type=int, default=None)
    p.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="table (tab-separated when not on a terminal), json or csv",
    )
    add_source_args(p)


def cmd_trials(args: argparse.Namespace) -> int:
    trials = call_source(
        args,
        lambda c: c.trials(args.sweep, status=args.status, bracket=args.bracket, rung=args.rung),
    )
    if args.format == "json":
        print(json.dumps(trials, indent=2))
        return EXIT_OK
    if args.format == "csv":
        _write_csv(
            TRIAL_FIELDS,
            [{k: t[k] for k in TRIAL_FIELDS} for t in trials],
        )
        return EXIT_OK
    output().rows(
        ("trial", "bracket", "rung", "resource", "status", "metric", "config", "reason"),
        [
            (
                t["id"],
                str(t["bracket"]),
                str(t["rung"]),
                str(t["resource"]),
                t["status"],
                format_number(t["metric"]),
                format_config(t["config"]),
                t["reason"] or "",
            )
            for t in trials
        ],
    )
    return EXIT_OK


def _write_csv(fields: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
                for k, v in row.items()
            }
        )
    sys.stdout.write(buf.getvalue())


# ---------------------------------------------------------------- results


def _args_results(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument(
        "--sort",
        default=None,
        metavar="KEY",
        help="a field (id, bracket, rung, resource, status, started_at, duration, ...) or a "
        "metric's name (default: the sweep's metric, best first; trials without it last)",
    )
    p.add_argument("--reverse", action="store_true", help="reverse the order")
    p.add_argument("--top", type=int, default=None, metavar="K", help="only the first K rows")
    add_source_args(p)


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def results_rows(trials: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per trial run: its fields, times (ISO 8601 UTC, duration in seconds)
    and every metric it reported (``metrics``)."""
    rows = []
    for t in trials:
        start, end = t.get("started_at"), t.get("ended_at")
        row = {k: t.get(k) for k in RESULT_FIELDS[:8]}
        row["started_at"] = _iso(start)
        row["ended_at"] = _iso(end)
        row["duration"] = round(end - start, 3) if start is not None and end is not None else None
        row["metrics"] = dict(t.get("metrics") or {})
        rows.append(row)
    return rows


def sort_rows(
    rows: list[dict[str, Any]], key: str | None, *, metric: str, minimize: bool, reverse: bool
) -> list[dict[str, Any]]:
    """Rows in ``key`` order; rows without a value for it last, ties by id."""
    key = key or metric
    names = set(RESULT_FIELDS) | {m for r in rows for m in r["metrics"]}
    if key not in names and key != metric and rows:
        raise UserError(f"--sort {key}: no such field or reported metric; one of {sorted(names)}")
    descending = key == metric and not minimize

    def value(row: dict[str, Any]) -> Any:
        v = row["metric"] if key == "metric" else row["metrics"].get(key, row.get(key))
        if key == metric and row["status"] != TrialStatus.SUCCEEDED:
            v = None  # a failed run's partial metric does not rank it
        return v

    present = [r for r in rows if isinstance(value(r), int | float | str) and value(r) == value(r)]
    missing = [r for r in rows if r not in present]

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        v = value(row)
        if isinstance(v, int | float) and not math.isnan(v):
            return (0, -v if descending else v, "")
        return (1, 0.0, str(v))

    present.sort(key=lambda r: (*order(r), r["id"]))
    missing.sort(key=lambda r: r["id"])
    ranked = present + missing
    if reverse:
        ranked = present[::-1] + missing
    return ranked


def cmd_results(args: argparse.Namespace) -> int:
    if args.top is not None and args.top < 1:
        raise UserError("--top must be at least 1")

    async def fetch(source: Source) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return await source.sweep(args.sweep), await source.trials(args.sweep)

    detail, trials = call_source(args, fetch)
    metric = detail["metric"]
    rows = sort_rows(
        results_rows(trials),
        args.sort,
        metric=metric["name"],
        minimize=metric.get("optimization", "minimize") == "minimize",
        reverse=args.reverse,
    )[: args.top]
    names = sorted({m for r in rows for m in r["metrics"]})
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        flat = [
            {
                **{k: r[k] for k in RESULT_FIELDS},
                **{f"metrics.{m}": r["metrics"].get(m) for m in names},
            }
            for r in rows
        ]
        _write_csv([*RESULT_FIELDS, *(f"metrics.{m}" for m in names)], flat)
    else:

        def cell(key: str, value: Any) -> str:
            if key == "config":
                return format_config(value)
            if isinstance(value, float):
                return format_number(value)
            return "-" if value is None else str(value)

        output().rows(
            (*RESULT_FIELDS, *names),
            [
                (
                    *(cell(k, r[k]) for k in RESULT_FIELDS),
                    *(cell(m, r["metrics"].get(m)) for m in names),
                )
                for r in rows
            ],
        )
    return EXIT_OK


# ---------------------------------------------------------------- cancel


def _args_cancel(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep")
    add_connection_args(p)


def cmd_cancel(args: argparse.Namespace) -> int:
    if call(args, lambda c: c.cancel(args.sweep)):
        say(f"sweep {args.sweep}: stopping (running trials are being cancelled)")
    else:
        say(f"sweep {args.sweep} had already finished")
    return EXIT_OK


# ---------------------------------------------------------------- extend


def _args_extend(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep")
    p.add_argument(
        "--iterations",
        type=int,
        default=1,
        help="how many more Hyperband iterations (default 1)",
    )
    add_connection_args(p)


def cmd_extend(args: argparse.Namespace) -> int:
    total = call(args, lambda c: c.extend(args.sweep, args.iterations))
    say(f"sweep {args.sweep}: {args.iterations} more iteration(s), {total} in all")
    return EXIT_OK


COMMANDS: tuple[Command, ...] = (
    Command("submit", "submit a sweep spec to the daemon", _args_submit, cmd_submit),
    Command("status", "list sweeps, or show one sweep's progress", _args_status, cmd_status),
    Command("trials", "list a sweep's trials", _args_trials, cmd_trials),
    Command(
        "results", "every trial run of a sweep, for people or scripts", _args_results, cmd_results
    ),
    Command(
        "cancel",
        "stop a sweep: nothing new starts, running trials are cancelled",
        _args_cancel,
        cmd_cancel,
    ),
    Command(
        "extend",
        "run more Hyperband iterations in a sweep (a finished one is reopened)",
        _args_extend,
        cmd_extend,
    ),
)
