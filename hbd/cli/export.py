"""``hbd export SWEEP --optuna-journal FILE``: a sweep for optuna-dashboard.

Reads the sweep through the daemon's API (its detail, its trial runs, and its
``sweep.submitted`` and ``trial.metrics`` events) and writes an Optuna journal
with ``hbd.export.optuna_journal``. Optuna is imported only when exporting.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

from hbd.cli.base import EXIT_OK, Command, UserError, say, warn
from hbd.cli.remote import add_connection_args, call
from hbd.client import Client

# Events the export reads: the spec (for the parameters' kinds) and the curves.
EXPORT_EVENT_TYPES = ("sweep.submitted", "trial.metrics")


def _args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="the sweep id")
    p.add_argument(
        "--optuna-journal",
        metavar="FILE",
        required=True,
        help="write an Optuna journal file (open it with `optuna-dashboard FILE`)",
    )
    p.add_argument("--study-name", default=None, help="the Optuna study's name (default: sweep id)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    add_connection_args(p)


async def fetch_sweep(
    client: Client, sweep: str
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(detail, the spec's params, trial runs, each trial's trial.metrics payloads)."""
    detail = await client.sweep(sweep)
    trials = await client.trials(sweep)
    params: dict[str, Any] = {}
    reports: dict[str, list[dict[str, Any]]] = defaultdict(list)
    async for event in client.events(sweep, types=EXPORT_EVENT_TYPES, follow=False):
        if event.type == "sweep.submitted":
            params = dict(event.payload.get("spec_json", {}).get("matrix", {}).get("params") or {})
        elif event.type == "trial.metrics" and event.trial_id:
            reports[event.trial_id].append(event.payload)
    return detail, params, trials, dict(reports)


def cmd_export(args: argparse.Namespace) -> int:
    from hbd.export.optuna_journal import OptunaMissing, require_optuna, write_journal

    path = Path(args.optuna_journal)
    try:
        require_optuna()  # before asking the daemon anything
    except OptunaMissing as exc:
        raise UserError(str(exc)) from None
    if path.exists() and not args.force:
        raise UserError(f"{path} exists: remove it, choose another file, or pass --force")
    if not path.parent.is_dir():
        raise UserError(f"{path.parent} is not a directory")
    detail, params, trials, reports = call(args, lambda c: fetch_sweep(c, args.sweep))
    try:
        summary = write_journal(
            path, detail, params, trials, reports, study_name=args.study_name, overwrite=args.force
        )
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    say(
        f"wrote {summary.trials} trial runs of sweep {detail['id']} "
        f"({summary.intermediate_values} intermediate values) to {path} "
        f"as Optuna study {summary.study_name!r}"
    )
    if summary.skipped_unfinished:
        warn(f"{summary.skipped_unfinished} trial runs had not ended and were left out")
    say(f"view it with: optuna-dashboard {path}")
    return EXIT_OK


COMMANDS: tuple[Command, ...] = (
    Command(
        "export",
        "write a sweep for other tools: an Optuna journal for optuna-dashboard",
        _args_export,
        cmd_export,
    ),
)
