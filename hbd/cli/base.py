"""What every ``hbd`` command shares: exit codes, the command record, output helpers.

Commands print only through the helpers here (or rich tables), so that
``--json`` output stays one JSON document and errors go to stderr as
``error: ...`` lines, never as tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # imported where used: `hbd --help` must not pay for rich or pydantic
    from rich.table import Table

    from hbd.core.spec import SweepSpec

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

# A sweep spec is a few kilobytes; refusing anything far larger keeps a
# mistaken path (a dataset, /dev/zero) from being read into memory. The
# daemon's request-body limit (hbd.api.asgi.MAX_REQUEST_BODY_BYTES, equal by a
# test; not imported, since that module loads the web server): a larger spec
# could not be submitted anyway.
MAX_SPEC_BYTES = 1024 * 1024
# Human output of a rung lists at most this many promoted configurations.
MAX_CONFIGS_SHOWN = 3
# ... and at most this many failed trials' reasons after the brackets.
MAX_FAILURES_SHOWN = 5


class UserError(Exception):
    """A mistake the user can fix (a missing file, an invalid spec); ``main`` prints
    each of its lines as an error and exits 2."""

    def __init__(self, *lines: str) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


class RemoteFailure(Exception):
    """What the command asked of the daemon failed, not the user: it is unreachable,
    timed out or answered 5xx. ``main`` prints the one line as an error and exits 1."""


def leaf_error(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def address_in_use(exc: BaseException, host: str, port: int | None) -> str | None:
    """The message for a listening socket refused with EADDRINUSE, naming the port and
    the two ways out; None for any other error."""
    import errno

    if not isinstance(exc, OSError) or exc.errno != errno.EADDRINUSE:
        return None
    url = f"http://{host}:{port}"
    return (
        f"port {port} on {host} is already in use: is an hbd daemon already running there "
        f"(hbd status --url {url})? Otherwise choose another port with --port"
    )


# ---------------------------------------------------------------- output helpers


class Output:
    """Tables through rich; plain lines unwrapped (a log line should stay one line)."""

    def __init__(self) -> None:
        # Made per command, not at import, so that it writes to the sys.stdout of
        # the moment (pytest's capsys replaces it). No markup or highlighting:
        # configs are data and may contain brackets.
        from rich.console import Console

        self.console = Console(file=sys.stdout, markup=False, highlight=False)

    def line(self, text: str) -> None:
        from rich.text import Text

        self.console.print(Text(text), soft_wrap=True)

    def table(self, table: Table) -> None:
        self.console.print(table)

    def rows(self, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        """A table a script can read: on a terminal, rich's (cells fold, never cut
        to "…"); anywhere else one tab-separated line per row under a header line,
        so `hbd trials X | grep c4` and `cut -f1` see whole ids and statuses."""
        if not self.console.is_terminal:
            for cells in (headers, *rows):
                print("\t".join(" ".join(str(c).split()) for c in cells))
            return
        from rich.table import Table

        table = Table(*headers)
        for column in table.columns:
            column.overflow = "fold"
        for cells in rows:
            table.add_row(*cells)
        self.console.print(table)


def output() -> Output:
    return Output()


def say(line: str, file: TextIO | None = None) -> None:
    print(line, file=file or sys.stdout)


def warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


def error(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)


def print_json(data: Mapping[str, Any]) -> None:
    # allow_nan=False: the output must be JSON that any parser accepts.
    print(json.dumps(data, indent=2, allow_nan=False))


def format_number(x: float | None, digits: int = 6) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def format_config(config: Mapping[str, Any]) -> str:
    return " ".join(
        f"{k}={format_number(v, 4) if isinstance(v, float) else v}" for k, v in config.items()
    )


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------- shared steps


def read_spec(path: str) -> SweepSpec:
    """Read and validate the spec at ``path`` (``-`` for stdin)."""
    return read_spec_text(path)[1]


def read_spec_text(path: str) -> tuple[str, SweepSpec]:
    """The spec's text as written, and the validated spec."""
    from hbd.core.errors import SpecError
    from hbd.core.spec import spec_from_data
    from hbd.specfile import resolve_spec_data

    try:
        if path == "-":
            text = sys.stdin.read(MAX_SPEC_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_SPEC_BYTES + 1)
            if len(raw) > MAX_SPEC_BYTES:
                raise UserError(
                    f"{path}: larger than {MAX_SPEC_BYTES // 1024} KiB; is this a sweep spec?"
                )
            text = raw.decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a spec file") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.start}); is this a YAML spec?"
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(text) > MAX_SPEC_BYTES:
        raise UserError(f"{path}: larger than {MAX_SPEC_BYTES // 1024} KiB; is this a sweep spec?")
    try:
        # pathRef and a relative workingDir are the spec folder's: resolved here,
        # so validate, submit and run all see (and send) the same spec.
        text, data = resolve_spec_data(text, Path(spec_dir(path)))
        return text, spec_from_data(data)
    except SpecError as exc:
        name = "<stdin>" if path == "-" else path
        raise UserError(*(f"{name}: {problem}" for problem in exc.problems)) from None


def spec_dir(path: str) -> str:
    return os.getcwd() if path == "-" else str(Path(path).resolve().parent)


# ---------------------------------------------------------------- validate
