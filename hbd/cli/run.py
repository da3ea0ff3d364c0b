"""`hbd run`: the whole thing in one command, for a first sweep or a notebook host.

It starts a real daemon in this process (SQLite file, an executor agent with
local slots reached over loopback HTTP), submits the spec through the HTTP
API like `hbd submit` would, shows progress, prints the best configuration
and stops. The database stays behind, so `hbd serve --db` on it shows the
history.

Ctrl-C (SIGINT) or SIGTERM stops the trials, records them as interrupted (not
failed: an interruption is hbd's, not the trial's) and prints how to resume.
Running the same `hbd run FILE` again on the same database resumes that sweep:
the interrupted trials run again as the same trials, so it ends as an
uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hbd.cli.base import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Command,
    RemoteFailure,
    UserError,
    address_in_use,
    leaf_error,
    read_spec_text,
    say,
)
from hbd.cli.remote import cli_error
from hbd.cli.sweeps import print_outcome
from hbd.core.vocabulary import SweepStatus
from hbd.errors import HbdError, SchemaTooNew

if TYPE_CHECKING:
    import anyio.abc

    from hbd.client import Client

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


@dataclass
class Interrupted:
    """How a run that a signal stopped ended: what to tell the user."""

    signal: str
    sweep_id: str | None = None
    trials: dict[str, list[str]] = field(default_factory=dict)  # sweep id -> interrupted trials


def cmd_run(args: argparse.Namespace) -> int:
    text, _ = read_spec_text(args.file)
    if args.local_executor < 1:
        raise UserError("--local-executor must be at least 1")
    # The server is imported here, not at the top: other commands stay fast.
    import anyio

    from hbd.logs import configure as configure_logging
    from hbd.store.files import private_dir

    private_dir(args.db.parent)  # 0700 when created (hbd.store.files)
    # The daemon's own log lines would drown the progress bar; warnings still show.
    configure_logging("warning")
    try:
        result = anyio.run(_run, args, text)
    except BaseException as exc:
        # Errors of the embedded daemon and client arrive wrapped in the task
        # group's ExceptionGroup: unwrap, so the user reads one line, not a traceback.
        leaf = leaf_error(exc)
        if message := address_in_use(leaf, "127.0.0.1", args.port):
            raise RemoteFailure(f"hbd run failed: {message}") from None
        raise _run_error(leaf) from None
    if isinstance(result, Interrupted):
        _print_interrupted(args, result)
        return EXIT_INTERRUPTED
    print_outcome(result)
    return EXIT_OK if result["status"] == SweepStatus.SUCCEEDED else EXIT_FAILURE


def resume_command(args: argparse.Namespace) -> str:
    """The command that resumes this run: the same one, as the user typed it."""
    parts = ["hbd", "run", str(args.file)]
    if args.db != DEFAULT_DB:
        parts += ["--db", str(args.db)]
    if args.local_executor != DEFAULT_SLOTS:
        parts += ["--local-executor", str(args.local_executor)]
    return shlex.join(parts)


def _print_interrupted(args: argparse.Namespace, result: Interrupted) -> None:
    err = sys.stderr
    if result.sweep_id is None:
        say(f"interrupted ({result.signal}) before a sweep was started; nothing to resume", err)
        return
    stopped = len(result.trials.get(result.sweep_id, []))
    say(
        f"interrupted ({result.signal}): sweep {result.sweep_id} stopped with {stopped} "
        "trial run(s) recorded as interrupted, to run again on resume",
        err,
    )
    say(f"database: {args.db}", err)
    say(f"resume with: {resume_command(args)}", err)


def _run_error(leaf: BaseException) -> BaseException:
    """What ``main`` should see for an error out of the run: a CLI error, or ``leaf`` itself."""
    from hbd.client import ClientError

    if isinstance(leaf, SchemaTooNew):
        return UserError(str(leaf))  # the --db file belongs to a newer hbd: the user's to fix
    if isinstance(leaf, ClientError):
        return cli_error(leaf)
    if isinstance(leaf, OSError) and leaf.strerror:
        return RemoteFailure(f"hbd run failed: {leaf.strerror}")  # port in use, unwritable db
    if isinstance(leaf, HbdError):
        return RemoteFailure(f"hbd run failed: {leaf}")
    return leaf  # KeyboardInterrupt (main says "interrupted"), or a bug: its traceback


async def _watch_signals(
    work: anyio.CancelScope,
    got: list[str],
    *,
    task_status: anyio.abc.TaskStatus[None],  # always given by tg.start
) -> None:
    """The first SIGINT/SIGTERM stops the work; later ones are absorbed while the trials stop.

    SIGTERM must not kill the process outright (its default): the embedded
    agent would leave the trial processes running, orphaned.
    """
    import anyio

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            if not got:
                got.append(signal.Signals(signum).name)
                work.cancel()


async def _run(args: argparse.Namespace, text: str) -> dict[str, Any] | Interrupted:
    import anyio

    work = anyio.CancelScope()
    got: list[str] = []
    # The signal watcher outlives the daemon and its agent: a second Ctrl-C while
    # the trials are being stopped must not cut that short and orphan them.
    result: dict[str, Any] | Interrupted = {}
    async with anyio.create_task_group() as outer:
        await outer.start(_watch_signals, work, got)
        try:
            result = await _serve_and_follow(args, text, work, got)
        finally:
            outer.cancel_scope.cancel()
    return result


async def _serve_and_follow(
    args: argparse.Namespace, text: str, work: anyio.CancelScope, got: list[str]
) -> dict[str, Any] | Interrupted:
    import anyio

    from hbd.api.server import EMBEDDED_TOKEN_BYTES, DaemonOptions, serve_daemon
    from hbd.client import Client

    # A fresh token, known only to this process: without one, any local user
    # could submit sweeps (commands run as this user) to the loopback port.
    token = secrets.token_urlsafe(EMBEDDED_TOKEN_BYTES)
    opts = DaemonOptions(db=args.db, port=args.port, local_slots=args.local_executor, token=token)
    sweep_id: str | None = None
    detail: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        running = await tg.start(serve_daemon, opts)
        with work:
            async with Client(running.url, token=token) as client:
                sweep_id = await running.daemon.unfinished_with_spec(text)
                if sweep_id is not None:
                    say(f"resuming sweep {sweep_id} (interrupted earlier) from {args.db}")
                else:
                    sweep_id = await client.submit(text)
                say(f"sweep {sweep_id}: database {args.db.resolve()}, API {running.url}")
                detail = await _follow(client, sweep_id)
        if got:
            trials = await running.daemon.interrupt(f"hbd run interrupted ({got[0]})")
            tg.cancel_scope.cancel()  # the embedded agent stops the trials on its way out
            if sweep_id is None and trials:  # stopped while resuming an earlier sweep
                sweep_id = min(trials)
            return Interrupted(got[0], sweep_id, trials)
        tg.cancel_scope.cancel()
    return detail


async def _follow(client: Client, sweep_id: str) -> dict[str, Any]:
    from hbd.cli.progress import SweepProgress, follow

    with SweepProgress(sweep_id) as progress:
        return await follow(client, sweep_id, progress)


COMMANDS: tuple[Command, ...] = (
    Command(
        "run",
        "run one sweep start to finish with an embedded daemon and local executor",
        _args_run,
        cmd_run,
    ),
)
