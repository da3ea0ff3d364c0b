"""The ``hbd`` command line: the only module that prints.

Each command is one ``cmd_<name>(args) -> int`` plus one ``_args_<name>(parser)``
that declares its arguments, listed once in ``COMMANDS``; ``build_parser``
builds the argparse tree from that registry. To add a command, write the two
functions and append a ``Command`` to ``COMMANDS``.

Exit codes: ``EXIT_OK`` (0), ``EXIT_FAILURE`` (1, the command ran but what it
ran failed), ``EXIT_USAGE`` (2, the user's mistake: bad arguments, a missing or
unreadable file, an invalid spec, an unusable ``--objective``). A user's
mistake is reported in readable lines on stderr, never as a traceback:
commands raise ``UserError``/``SpecError``/``ObjectiveError`` and ``main``
turns them into messages. A daemon that cannot be reached, times out or
answers 5xx is ``RemoteFailure``: one line, exit 1.

Human output goes through ``rich`` (tables); ``--json`` prints exactly one
JSON object on stdout and nothing else there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from hbd.cli import export, init, logs, run, service, spec_commands, sweeps, watch
from hbd.cli.base import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    RemoteFailure,
    UserError,
    error,
)
from hbd.version import __version__

__all__ = ["COMMANDS", "Command", "UserError", "build_parser", "main"]

COMMANDS: tuple[Command, ...] = (
    *spec_commands.COMMANDS,
    *sweeps.COMMANDS,
    *logs.COMMANDS,
    *run.COMMANDS,
    *service.COMMANDS,
    *init.COMMANDS,
    *watch.COMMANDS,
    *export.COMMANDS,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hbd",
        description="hbd: a Hyperband sweep daemon for Polyaxon `matrix: kind: hyperband` specs.",
    )
    parser.add_argument("--version", action="version", version=f"hbd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code: int = args.handler(args)
        sys.stdout.flush()
        return code
    except UserError as exc:
        for line in exc.lines:
            error(line)
        return EXIT_USAGE
    except RemoteFailure as exc:
        error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`hbd plan | head`); say nothing more to it.
        # Point stdout at /dev/null so the interpreter's flush at exit does not fail too.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
