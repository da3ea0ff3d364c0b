"""``hbd export SWEEP --optuna-journal FILE``: a sweep for optuna-dashboard.

Reads the sweep through the daemon's API (its detail, its trial runs, and its
``sweep.submitted`` and ``trial.metrics`` events) and writes an Optuna journal
with ``hbd.export.optuna_journal``. Optuna is imported only when exporting.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from hbd.cli.base import EXIT_OK, Command, UserError, say, warn
from hbd.cli.remote import add_connection_args, call

if TYPE_CHECKING:  # imported where used: `hbd --help` stays free of httpx
    from hbd.client import Client
    from hbd.export.optuna_journal import SweepData


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


async def fetch_sweep(client: Client, sweep: str) -> SweepData:
    from hbd.export.optuna_journal import EXPORT_EVENT_TYPES, sweep_data

    detail = await client.sweep(sweep)
    trials = await client.trials(sweep)
    events = [
        (e.type, e.trial_id, e.payload)
        async for e in client.events(sweep, types=EXPORT_EVENT_TYPES, follow=False)
    ]
    return sweep_data(detail, trials, events)


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
    data = call(args, lambda c: fetch_sweep(c, args.sweep))
    try:
        summary = write_journal(path, data, study_name=args.study_name, overwrite=args.force)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    say(
        f"wrote {summary.trials} trial runs of sweep {data.detail['id']} "
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
