"""`hbd run`: the whole thing in one command, for a first sweep or a notebook host.

It starts a real daemon in this process (SQLite file, an executor agent with
local slots reached over loopback HTTP), submits the spec through the HTTP
API like `hbd submit` would, shows progress, prints the best configuration
and stops. The database stays behind, so `hbd serve --db` on it shows the
history. Ctrl-C stops the trials; `hbd serve` on the same database resumes
the sweep, with the interrupted trials recorded as failed.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path
from typing import Any

import anyio
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hbd.api.server import EMBEDDED_TOKEN_BYTES, DaemonOptions, serve_daemon
from hbd.cli.base import (
    EXIT_FAILURE,
    EXIT_OK,
    Command,
    RemoteFailure,
    UserError,
    leaf_error,
    read_spec_text,
)
from hbd.cli.remote import cli_error
from hbd.cli.sweeps import print_outcome
from hbd.client import Client, ClientError
from hbd.errors import HbdError, SchemaTooNew
from hbd.logs import configure as configure_logging
from hbd.store.files import private_dir

DEFAULT_DB = Path(".hbd") / "hbd.db"
DEFAULT_SLOTS = 4


def _args_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="sweep spec (YAML or JSON)")
    p.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help=f"SQLite database (default: {DEFAULT_DB})"
    )
    p.add_argument(
        "--local-executor",
        type=int,
        default=DEFAULT_SLOTS,
        metavar="N",
        help=f"trial slots of the local executor (default: {DEFAULT_SLOTS})",
    )
    p.add_argument(
        "--port", type=int, default=0, help="API port on 127.0.0.1 (default: any free port)"
    )


def cmd_run(args: argparse.Namespace) -> int:
    text, _ = read_spec_text(args.file)
    if args.local_executor < 1:
        raise UserError("--local-executor must be at least 1")
    private_dir(args.db.parent)  # 0700 when created (hbd.store.files)
    # The daemon's own log lines would drown the progress bar; warnings still show.
    configure_logging("warning")
    try:
        detail = anyio.run(_run, args, text)
    except BaseException as exc:
        # Errors of the embedded daemon and client arrive wrapped in the task
        # group's ExceptionGroup: unwrap, so the user reads one line, not a traceback.
        raise _run_error(leaf_error(exc)) from None
    print_outcome(detail)
    return EXIT_OK if detail["status"] == "succeeded" else EXIT_FAILURE


def _run_error(leaf: BaseException) -> BaseException:
    """What ``main`` should see for an error out of the run: a CLI error, or ``leaf`` itself."""
    if isinstance(leaf, SchemaTooNew):
        return UserError(str(leaf))  # the --db file belongs to a newer hbd: the user's to fix
    if isinstance(leaf, ClientError):
        return cli_error(leaf)
    if isinstance(leaf, OSError) and leaf.strerror:
        return RemoteFailure(f"hbd run failed: {leaf.strerror}")  # port in use, unwritable db
    if isinstance(leaf, HbdError):
        return RemoteFailure(f"hbd run failed: {leaf}")
    return leaf  # KeyboardInterrupt (main says "interrupted"), or a bug: its traceback


async def _run(args: argparse.Namespace, text: str) -> dict[str, Any]:
    # A fresh token, known only to this process: without one, any local user
    # could submit sweeps (commands run as this user) to the loopback port.
    token = secrets.token_urlsafe(EMBEDDED_TOKEN_BYTES)
    opts = DaemonOptions(db=args.db, port=args.port, local_slots=args.local_executor, token=token)
    async with anyio.create_task_group() as tg:
        running = await tg.start(serve_daemon, opts)
        async with Client(running.url, token=token) as client:
            sweep_id = await client.submit(text)
            with Progress(
                TextColumn(f"sweep {sweep_id}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("trial runs  best {task.fields[best]}"),
                TimeElapsedColumn(),
                transient=True,
            ) as progress:
                task = progress.add_task("trials", total=None, best="-")

                def show(detail: dict[str, Any]) -> None:
                    ended = sum(
                        n
                        for s, n in detail["trials"].items()
                        if s in ("succeeded", "failed", "cancelled")
                    )
                    best = detail["best"]["metric"] if detail.get("best") else None
                    progress.update(
                        task,
                        total=detail["planned_trial_runs"],
                        completed=ended,
                        best="-" if best is None else f"{best:.6g}",
                    )

                detail = await client.wait(sweep_id, on_progress=show)
        tg.cancel_scope.cancel()
    return detail


COMMANDS: tuple[Command, ...] = (
    Command(
        "run",
        "run one sweep start to finish with an embedded daemon and local executor",
        _args_run,
        cmd_run,
    ),
)
