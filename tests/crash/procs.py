"""The processes the crash tests kill: a daemon and a standalone executor agent.

    python -m tests.crash.procs daemon --db D --port P --executor URL [--spec F --sweep-id ID]
    python -m tests.crash.procs agent --port P --workdir W --slots N

``daemon`` serves until the sweep it was given has finished, then exits 0
(submitting is idempotent, so every restart submits again, as a user whose
POST went unanswered would). Both exit 0 on SIGTERM, and both give up after
``--deadline`` seconds or when their parent (the test) is gone, so that
nothing outlives a test run even if the test itself is killed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from functools import partial
from pathlib import Path

import anyio

# Poll interval of the "is the sweep finished?" loop and the parent watchdog.
WATCH_INTERVAL = 0.05


async def _watchdog(scope: anyio.CancelScope, deadline: float, parent: int) -> None:
    with anyio.move_on_after(deadline):
        while os.getppid() == parent:
            await anyio.sleep(WATCH_INTERVAL)
    scope.cancel()


async def _on_sigterm(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def run_daemon(args: argparse.Namespace) -> int:
    from hbd.api.server import DaemonOptions, serve_daemon

    opts = DaemonOptions(
        db=Path(args.db),
        port=args.port,
        executors=list(args.executor),
        local_slots=args.local_slots,
        workdir=Path(args.workdir) if args.workdir else None,
    )
    parent = os.getppid()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watchdog, tg.cancel_scope, args.deadline, parent)
        tg.start_soon(_on_sigterm, tg.cancel_scope)
        running = await tg.start(serve_daemon, opts)
        if args.spec:
            daemon = running.daemon
            await daemon.submit(Path(args.spec).read_text(), sweep_id=args.sweep_id)
            while True:
                sweep = await daemon.store.get_sweep(args.sweep_id)
                if sweep is not None and sweep.finished:
                    break
                await anyio.sleep(WATCH_INTERVAL)
            tg.cancel_scope.cancel()
    return 0


async def run_agent(args: argparse.Namespace) -> int:
    from hbd.api.agent_routes import serve_agent

    parent = os.getppid()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watchdog, tg.cancel_scope, args.deadline, parent)
        tg.start_soon(_on_sigterm, tg.cancel_scope)
        gpus = tuple(g for g in args.gpus.split(",") if g)  # fake device ids
        await tg.start(
            partial(serve_agent, gpus=gpus), "127.0.0.1", args.port, Path(args.workdir), args.slots
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("daemon")
    d.add_argument("--db", required=True)
    d.add_argument("--port", type=int, required=True)
    d.add_argument("--executor", action="append", default=[])
    d.add_argument("--local-slots", type=int, default=0)
    d.add_argument("--workdir")
    d.add_argument("--spec")
    d.add_argument("--sweep-id")
    d.add_argument("--deadline", type=float, default=120.0)
    a = sub.add_parser("agent")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--workdir", required=True)
    a.add_argument("--slots", type=int, default=4)
    a.add_argument("--gpus", default="")
    a.add_argument("--deadline", type=float, default=300.0)
    args = parser.parse_args()
    runner = run_daemon if args.what == "daemon" else run_agent
    return anyio.run(runner, args, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
