"""Thin clients of the daemon's API: submit, status, trials, results, cancel."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from hbd.cli.base import (
    EXIT_FAILURE,
    EXIT_OK,
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
from hbd.cli.remote import add_connection_args, call
from hbd.client import Client
from hbd.core.spec import spec_warnings, sweep_id_problem

# Fields of `hbd results` that scripts rely on, in this order for csv.
RESULT_FIELDS = ("id", "bracket", "rung", "config", "resource", "status", "metric", "parent")


def _args_submit(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="sweep spec (YAML or JSON); '-' reads stdin")
    p.add_argument(
        "--id", default=None, help="sweep id to use (resubmitting the same spec is a no-op)"
    )
    p.add_argument("--wait", action="store_true", help="return when the sweep has finished")
    add_connection_args(p)


def cmd_submit(args: argparse.Namespace) -> int:
    if args.id is not None and (problem := sweep_id_problem(args.id)):
        raise UserError(f"--id: {problem}")
    # Validated here first: the same errors as the daemon's, without a round trip.
    text, spec = read_spec_text(args.file)
    for line in spec_warnings(spec):  # the daemon's answer carries the same lines
        warn(line)

    async def submit(client: Client) -> tuple[str, dict[str, Any] | None]:
        sweep_id = await client.submit(text, sweep_id=args.id)
        print(sweep_id, flush=True)
        return sweep_id, (await client.wait(sweep_id) if args.wait else None)

    _, detail = call(args, submit)
    if detail is None:
        return EXIT_OK
    print_outcome(detail)
    return EXIT_OK if detail["status"] == "succeeded" else EXIT_FAILURE


def print_outcome(detail: Mapping[str, Any]) -> None:
    out = output()
    out.line(f"sweep {detail['id']} {detail['status']}: {detail.get('reason') or ''}".rstrip(": "))
    best = detail.get("best")
    if best:
        metric = detail["metric"]["name"]
        out.line(
            f"best: {metric}={format_number(best['metric'])} at {detail['resource']['name']}={best['resource']}"
            f" (bracket {best['bracket']}, rung {best['rung']}, trial {best['id']})"
        )
        out.line(f"config: {format_config(best['config'])}")


def _args_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", nargs="?", help="a sweep id (default: list all sweeps)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_connection_args(p)


def cmd_status(args: argparse.Namespace) -> int:
    if args.sweep is None:
        sweeps = call(args, lambda c: c.sweeps())
        if args.json:
            print(json.dumps(sweeps, indent=2))
            return EXIT_OK
        table = Table("id", "name", "status", "best", "reason")
        for s in sweeps:
            table.add_row(
                s["id"],
                s["name"] or "",
                s["status"],
                format_number(s["best_metric"]),
                s["reason"] or "",
            )
        output().table(table)
        return EXIT_OK
    detail = call(args, lambda c: c.sweep(args.sweep))
    if args.json:
        print_json(detail)
        return EXIT_OK
    out = output()
    counts = ", ".join(f"{n} {s}" for s, n in sorted(detail["trials"].items())) or "none yet"
    out.line(
        f"sweep {detail['id']} ({detail['name'] or 'unnamed'}): {detail['status']}; trials: {counts}"
    )
    table = Table("bracket", "rung", "resource", "planned", "trials", "by status")
    for b in detail["brackets"]:
        for r in b["rungs"]:
            by = ", ".join(f"{n} {s}" for s, n in sorted(r["by_status"].items()))
            table.add_row(
                str(b["bracket"]),
                str(r["rung"]),
                str(r["resource"]),
                str(r["planned"]),
                str(r["trials"]),
                by,
            )
    out.table(table)
    print_outcome(detail)
    return EXIT_OK


def _args_trials(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep")
    p.add_argument("--status", default=None)
    p.add_argument("--bracket", type=int, default=None)
    p.add_argument("--rung", type=int, default=None)
    add_connection_args(p)


def cmd_trials(args: argparse.Namespace) -> int:
    trials = call(
        args,
        lambda c: c.trials(args.sweep, status=args.status, bracket=args.bracket, rung=args.rung),
    )
    table = Table("trial", "bracket", "rung", "resource", "status", "metric", "config", "reason")
    for t in trials:
        table.add_row(
            t["id"],
            str(t["bracket"]),
            str(t["rung"]),
            str(t["resource"]),
            t["status"],
            format_number(t["metric"]),
            format_config(t["config"]),
            t["reason"] or "",
        )
    output().table(table)
    return EXIT_OK


def _args_results(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    add_connection_args(p)


def results_rows(trials: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: t[k] for k in RESULT_FIELDS} for t in trials]


def cmd_results(args: argparse.Namespace) -> int:
    rows = results_rows(call(args, lambda c: c.trials(args.sweep)))
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=RESULT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "config": json.dumps(row["config"], sort_keys=True)})
        sys.stdout.write(buf.getvalue())
    else:
        table = Table(*RESULT_FIELDS)
        for row in rows:
            table.add_row(
                *(
                    format_config(v)
                    if k == "config"
                    else format_number(v)
                    if k == "metric"
                    else str(v)
                    for k, v in row.items()
                )
            )
        output().table(table)
    return EXIT_OK


def _args_cancel(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep")
    add_connection_args(p)


def cmd_cancel(args: argparse.Namespace) -> int:
    if call(args, lambda c: c.cancel(args.sweep)):
        say(f"sweep {args.sweep}: stopping (running trials are being cancelled)")
    else:
        say(f"sweep {args.sweep} had already finished")
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
)
