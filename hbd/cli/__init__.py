"""The ``hbd`` command line: the only module that prints.

Each command is one ``cmd_<name>(args) -> int`` plus one ``_args_<name>(parser)``
that declares its arguments, listed once in its module's ``COMMANDS``;
``build_parser`` builds the argparse tree from those registries. To add a
command, write the two functions, append a ``Command`` to its module's
``COMMANDS`` and name it in ``COMMAND_MODULES`` (a test checks the two agree).

Start-up time is part of the interface (issue 15: `hbd --help` and `hbd
validate` well under 0.3 s): a command's module is imported only when that
command runs or ``--help`` lists it, and each module imports its heavy
libraries (pydantic, rich, httpx, the server) inside the functions that use
them.

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
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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

__all__ = ["COMMANDS", "COMMAND_MODULES", "Command", "UserError", "build_parser", "main"]

# The module (in hbd.cli) that defines each command, in the order `hbd --help`
# lists them.
COMMAND_MODULES: dict[str, str] = {
    "validate": "spec_commands",
    "plan": "spec_commands",
    "simulate": "spec_commands",
    "submit": "sweeps",
    "status": "sweeps",
    "trials": "sweeps",
    "results": "sweeps",
    "cancel": "sweeps",
    "extend": "sweeps",
    "logs": "logs",
    "run": "run",
    "serve": "service",
    "executor": "service",
    "config": "service",
    "doctor": "service",
    "init": "init",
    "watch": "watch",
    "events": "watch",
    "export": "export",
}


if TYPE_CHECKING:
    COMMANDS: tuple[Command, ...]  # every command, in COMMAND_MODULES order (see __getattr__)


def _commands(names: Sequence[str]) -> tuple[Command, ...]:
    """The ``Command``s called ``names``, importing only the modules that define them."""
    modules = dict.fromkeys(COMMAND_MODULES[n] for n in names)  # each once, in order
    loaded = [importlib.import_module(f"hbd.cli.{m}").COMMANDS for m in modules]
    return tuple(c for commands in loaded for c in commands if c.name in names)


def __getattr__(name: str) -> Any:
    # `COMMANDS` (every command) imports every command module: only on demand.
    if name == "COMMANDS":
        return _commands(list(COMMAND_MODULES))
    raise AttributeError(f"module 'hbd.cli' has no attribute {name!r}")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argparse tree of every command, or, when ``argv`` starts with a
    command's name, of that command alone: the only branch ``parse_args(argv)``
    can take, so the result and every message are the same, and the other
    commands' modules are not imported."""
    parser = argparse.ArgumentParser(
        prog="hbd",
        description="hbd: a Hyperband sweep daemon for Polyaxon `matrix: kind: hyperband` specs.",
    )
    parser.add_argument("--version", action="version", version=f"hbd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    first = argv[0] if argv else None
    names = [first] if first in COMMAND_MODULES else list(COMMAND_MODULES)
    for command in _commands(names):
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
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
