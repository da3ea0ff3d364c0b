"""How CLI commands reach a daemon: its URL and token, and what a ClientError means.

A 4xx answer is the user's mistake (a wrong id, a refused spec, a missing
token): ``UserError``, exit 2. No answer (unreachable, timed out, a lost
stream) or a 5xx is a failure of what they ran: ``RemoteFailure``, exit 1.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hbd.cli.base import RemoteFailure, UserError

if TYPE_CHECKING:  # imported where used: `hbd --help` must not load httpx
    from hbd.client import Client, ClientError

T = TypeVar("T")
# hbd.client.DEFAULT_URL (equal by a test), here for the help text without importing httpx.
DEFAULT_URL = "http://127.0.0.1:8765"


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help=f"daemon URL (default: $HBD_URL or {DEFAULT_URL})")
    p.add_argument(
        "--token-file",
        default=None,
        help="file holding the bearer token (default: $HBD_TOKEN, then $HBD_TOKEN_FILE)",
    )


def add_source_args(p: argparse.ArgumentParser) -> None:
    """A daemon's URL and token, or ``--db`` to read a database without one."""
    add_connection_args(p)
    p.add_argument(
        "--db",
        default=None,
        metavar="PATH",
        help="read this hbd database directly, read-only, instead of asking a daemon "
        "(works while a daemon uses it too)",
    )


def call_source(args: argparse.Namespace, fn: Callable[[Any], Awaitable[T]]) -> T:
    """``call``, or with ``--db`` the same ``fn`` over the database read directly."""
    if getattr(args, "db", None) is None:
        try:
            return call(args, fn)
        except RemoteFailure as exc:
            if "cannot reach" not in str(exc):
                raise
            # No daemon: the sweep may still be in a file (hbd run leaves .hbd/hbd.db).
            raise RemoteFailure(f"{exc}; or read a database file with --db PATH") from None
    import anyio

    from hbd.cli.localdb import LocalSource

    async def run() -> T:
        with LocalSource.open(args.db) as source:
            return await fn(source)

    return anyio.run(run)


def read_token(token_file: str | None) -> str | None:
    """The daemon's sources, in its order: --token-file, $HBD_TOKEN, $HBD_TOKEN_FILE."""
    token_file = token_file or (
        None if os.environ.get("HBD_TOKEN") else os.environ.get("HBD_TOKEN_FILE")
    )
    if token_file:
        try:
            return Path(token_file).read_text().strip() or None
        except OSError as exc:
            raise UserError(f"cannot read token file {token_file}: {exc.strerror}") from None
    return os.environ.get("HBD_TOKEN") or None


def call(args: argparse.Namespace, fn: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``fn`` with a client of the daemon named by ``args``; ClientError becomes
    UserError (4xx) or RemoteFailure (no answer, 5xx)."""
    import anyio

    from hbd.client import Client, ClientError

    url = daemon_url(args)
    token = read_token(args.token_file)

    async def run() -> T:
        async with Client(url, token=token) as client:
            return await fn(client)

    try:
        return anyio.run(run)
    except ClientError as exc:
        raise cli_error(exc) from None


def daemon_url(args: argparse.Namespace) -> str:
    """--url, else $HBD_URL, else the default; a URL without a scheme is a usage error."""
    from hbd.client import url_problem

    url: str = getattr(args, "url", None) or os.environ.get("HBD_URL") or DEFAULT_URL
    if problem := url_problem(url):
        source = "--url" if getattr(args, "url", None) else "HBD_URL"
        raise UserError(f"{source}: {problem}")
    return url


def cli_error(exc: ClientError) -> UserError | RemoteFailure:
    """The CLI's error for a failed request: whose fault it was decides the exit code."""
    if exc.status is not None and 400 <= exc.status < 500:
        return UserError(*str(exc).splitlines())
    return RemoteFailure(str(exc))
