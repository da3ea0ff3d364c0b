"""Run the whole daemon: store, sweeps, executors and the HTTP API in one task group.

With ``local_slots`` an executor agent runs in the same process, reached over
loopback HTTP with the same protocol as a remote one: the embedded default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus

from hbd.api.routes import create_app
from hbd.daemon.app import Daemon
from hbd.daemon.clock import Clock
from hbd.daemon.executors import ExecutorClient
from hbd.api.agent_routes import serve_agent
from hbd.api.asgi import serve_app
from hbd.store.log import open_store

log = structlog.get_logger(__name__)

LOCAL_EXECUTOR = "local"


@dataclass
class DaemonOptions:
    db: Path
    host: str = "127.0.0.1"
    port: int = 8765
    local_slots: int = 0
    workdir: Path | None = None  # the local executor's; default beside the database
    executors: list[str] = field(default_factory=list)
    token: str | None = None
    transport: httpx.AsyncBaseTransport | None = None  # tests: a fault-injecting transport
    clock: Clock | None = None


@dataclass
class Running:
    url: str
    daemon: Daemon


async def serve_daemon(opts: DaemonOptions, *, task_status: TaskStatus[Running] = anyio.TASK_STATUS_IGNORED) -> None:
    store = await open_store(opts.db)
    try:
        async with anyio.create_task_group() as tg:
            daemon = Daemon(store, clock=opts.clock)
            if opts.local_slots:
                workdir = opts.workdir or opts.db.parent / "executor"
                port = await tg.start(serve_agent, "127.0.0.1", 0, workdir, opts.local_slots, opts.token)
                daemon.add_executor(
                    LOCAL_EXECUTOR,
                    ExecutorClient(f"http://127.0.0.1:{port}", token=opts.token, transport=opts.transport),
                )
            for url in opts.executors:
                daemon.add_executor(url, ExecutorClient(url, token=opts.token, transport=opts.transport))
            port = await tg.start(serve_app, create_app(daemon), opts.host, opts.port)
            url = f"http://{opts.host}:{port}"
            daemon.callback_url = f"{url}/v1/callbacks"
            await tg.start(daemon.run)
            log.info("hbd daemon serving", url=url, db=str(opts.db), executors=list(daemon.pool.executors))
            task_status.started(Running(url=url, daemon=daemon))
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
