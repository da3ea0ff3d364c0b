"""``hbd logs TRIAL [--stderr] [--follow]``: a trial's output, from its executor.

The daemon proxies ``GET /v1/trials/{id}/logs`` to the executor that ran the
trial, a bounded page at a time; this command asks for pages until it has the
whole file, and with ``--follow`` keeps asking while the trial runs. With
``--db`` and no daemon, it reads the files of the local executor beside the
database (where `hbd run` and `hbd serve --local-executor` keep them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hbd.cli.base import EXIT_OK, Command, UserError
from hbd.cli.remote import add_source_args, call
from hbd.core.vocabulary import TERMINAL_TRIAL_STATUSES

# Printed where --follow lost output to the executor's log cap (the file keeps
# its head and most recent output; see docs/operations.md).
CUT_MARKER = "\n[... output cut to the log cap ...]\n"
# How often --follow asks for more output of a running trial.
FOLLOW_POLL_SECONDS = 1.0


def _args_logs(p: argparse.ArgumentParser) -> None:
    p.add_argument("trial", help="a trial id (hbd trials SWEEP lists them)")
    p.add_argument("--stderr", action="store_true", help="its stderr (default: stdout)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing while the trial runs")
    add_source_args(p)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cmd_logs(args: argparse.Namespace) -> int:
    stream = "stderr" if args.stderr else "stdout"
    if args.db is not None:
        return _local_logs(Path(args.db), args.trial, stream)

    async def show(client: Any) -> None:
        import anyio

        offset = omitted = 0
        while True:
            page = await client.logs(args.trial, stream=stream, offset=offset)
            moved = _resync(offset, omitted, page)
            omitted = page.get("omitted") or 0
            if moved is not None:  # the log was cut to its cap under us: find our place
                offset, cut = moved
                if cut:
                    _write(CUT_MARKER)
                continue
            _write(page["data"])
            offset = page["next_offset"]
            if offset < page["size"]:
                continue  # more of the file than one page
            if (
                not args.follow
                or (await client.trial(args.trial))["status"] in TERMINAL_TRIAL_STATUSES
            ):
                if args.follow:  # what it wrote between the last page and its end
                    while (page := await client.logs(args.trial, stream=stream, offset=offset))[
                        "data"
                    ]:
                        _write(page["data"])
                        offset = page["next_offset"]
                return
            await anyio.sleep(FOLLOW_POLL_SECONDS)

    call(args, show)
    return EXIT_OK


def _resync(offset: int, seen_omitted: int, page: dict[str, Any]) -> tuple[int, bool] | None:
    """Where to read next if the log was cut to its cap since ``offset`` was reached
    (with ``seen_omitted`` bytes dropped then): None if the page is in place, else
    (new offset, whether output we never printed was dropped).

    A capped log keeps its head, a marker, then its most recent output, which
    moves to lower offsets as older output is dropped: the same byte of output
    is found again through the count of bytes dropped before it.
    """
    omitted = page.get("omitted") or 0
    size = int(page["size"])
    if omitted == seen_omitted and offset <= size:
        return None
    marker, tail = page.get("marker_start"), page.get("tail_start")
    if not isinstance(marker, int) or not isinstance(tail, int):
        return min(offset, size), offset > size  # shrunk, layout unknown: from its end
    if seen_omitted == 0 or offset <= marker:
        position = offset  # bytes of output before offset
    else:
        position = max(offset, tail) - tail + marker + seen_omitted
    if position <= marker:
        return position, False  # still in the head, which is never cut
    new = position - marker - omitted + tail
    if new < tail:
        return tail, True
    return min(new, size), False


def _local_logs(db: Path, trial_id: str, stream: str) -> int:
    from hbd.executor.logpages import LogUnavailable, read_log_page

    workdir = db.parent / "executor"
    if not (workdir / "trials" / trial_id).is_dir() or trial_id in (".", ".."):
        raise UserError(
            f"no logs of trial {trial_id} under {workdir}: --db reads only a local "
            "executor's files; ask the daemon (hbd logs TRIAL --url URL) for others"
        )
    offset = 0
    while True:
        try:
            page = read_log_page(workdir, trial_id, stream, offset)  # type: ignore[arg-type]
        except LogUnavailable as exc:
            raise UserError(f"trial {trial_id}: {exc}") from None
        _write(page["data"])
        offset = page["next_offset"]
        if offset >= page["size"] or not page["data"]:
            return EXIT_OK


COMMANDS: tuple[Command, ...] = (
    Command(
        "logs", "print a trial's stdout (or --stderr), --follow while it runs", _args_logs, cmd_logs
    ),
)
