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
from typing import TypeVar

import anyio

from hbd.cli.base import RemoteFailure, UserError
from hbd.client import DEFAULT_URL, Client, ClientError

T = TypeVar("T")


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help=f"daemon URL (default: $HBD_URL or {DEFAULT_URL})")
    p.add_argument(
        "--token-file",
        default=None,
        help="file holding the bearer token (default: $HBD_TOKEN, then $HBD_TOKEN_FILE)",
    )


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
    url = args.url or os.environ.get("HBD_URL") or DEFAULT_URL
    token = read_token(args.token_file)

    async def run() -> T:
        async with Client(url, token=token) as client:
            return await fn(client)

    try:
        return anyio.run(run)
    except ClientError as exc:
        raise cli_error(exc) from None


def cli_error(exc: ClientError) -> UserError | RemoteFailure:
    """The CLI's error for a failed request: whose fault it was decides the exit code."""
    if exc.status is not None and 400 <= exc.status < 500:
        return UserError(*str(exc).splitlines())
    return RemoteFailure(str(exc))
