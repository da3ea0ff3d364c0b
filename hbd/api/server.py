"""Run the whole daemon: store, sweeps, executors and the HTTP API in one task group.

With ``local_slots`` an executor agent runs in the same process, reached over
loopback HTTP with the same protocol as a remote one: the embedded default.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus

from hbd import gpus as gpu_devices
from hbd.api.agent_routes import serve_agent
from hbd.api.asgi import (
    MAX_REQUEST_BODY_BYTES,
    ASGIApp,
    BearerAuth,
    BodySizeLimit,
    bind_socket,
    require_token_beyond_loopback,
    serve_app,
)
from hbd.api.metrics import metrics_router
from hbd.api.routes import create_app
from hbd.core.limits import DEFAULT_SPEC_LIMITS, SpecLimits
from hbd.core.retention import Keep
from hbd.core.sweep import FIRST_FAILURES_STOP
from hbd.daemon.app import Daemon
from hbd.daemon.backend import ExecutorBackend, backend_for
from hbd.daemon.clock import Clock
from hbd.daemon.placement import LOST_AFTER
from hbd.http import WILDCARD_HOSTS, base_url, host_url
from hbd.lock import database_lock
from hbd.store.log import open_store
from hbd.web.app import WebPage

log = structlog.get_logger(__name__)

LOCAL_EXECUTOR = "local"
# Random bytes of the token an embedded agent (and `hbd run`'s daemon) gets:
# 32 bytes (256 bits), like `openssl rand -hex 32` in the docs.
EMBEDDED_TOKEN_BYTES = 32
# Hosts that mean "every interface": not an address anyone can call back.


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
    lost_after: float = LOST_AFTER  # see hbd.daemon.placement
    # How executors reach this daemon for callbacks, when not http://host:port
    # (a daemon bound to 0.0.0.0, or behind a proxy).
    advertise_url: str | None = None
    max_request_bytes: int = MAX_REQUEST_BODY_BYTES
    spec_limits: SpecLimits = DEFAULT_SPEC_LIMITS  # see hbd.core.limits
    # The in-process agent leaves its trials running when the daemon stops
    # (hbd serve); one-shot uses and tests stop them.
    keep_local_trials: bool = False
    first_failures_stop: int = FIRST_FAILURES_STOP  # see hbd.core.sweep
    # GPU devices of the in-process agent (hbd.gpus: auto, none, 0,1).
    local_gpus: str = "auto"
    # Where checkpoints live and which are kept (settings checkpoints, checkpoints_keep;
    # `hbd serve` passes the setting, default "resumable"; embedded uses and `hbd run`
    # keep all, as before retention existed).
    checkpoints: str | None = None
    checkpoints_keep: Keep = "all"


@dataclass
class Running:
    url: str
    daemon: Daemon


# Routes answered without the token: liveness probes carry no credentials.
PUBLIC_PATHS = frozenset({"/healthz"})


def callback_base(host: str, port: int, advertise_url: str | None) -> str:
    """Where executors reach this daemon: ``advertise_url``, else this host and port."""
    if advertise_url:
        return base_url(advertise_url)
    if host in WILDCARD_HOSTS:
        log.warning(
            "listening on a wildcard address; executors are told to call back on 127.0.0.1, "
            "which only local executors can reach: set advertise_url for remote ones",
            host=host,
        )
        host = "127.0.0.1"
    return host_url(host, port)


def protected_app(daemon: Daemon, token: str | None, max_request_bytes: int) -> ASGIApp:
    """The daemon's routes with /metrics, behind the body-size limit and the bearer check,
    and the web page at / in front (its session cookie stands in for the token on reads)."""
    app = create_app(daemon)
    app.include_router(metrics_router(daemon))
    return WebPage(
        BearerAuth(BodySizeLimit(app, max_request_bytes), token, exempt=PUBLIC_PATHS), token
    )


async def serve_daemon(
    opts: DaemonOptions, *, task_status: TaskStatus[Running] = anyio.TASK_STATUS_IGNORED
) -> None:
    require_token_beyond_loopback(opts.host, opts.token)
    # One daemon per database, for the daemon's whole life (see hbd/lock.py):
    # taken before the file is opened, so a refused second daemon changes nothing.
    with database_lock(opts.db.resolve()):
        await _serve_locked(opts, task_status=task_status)


def _backend(opts: DaemonOptions, url: str, token: str | None) -> ExecutorBackend:
    """The backend for ``url``, chosen by its scheme (``hbd.daemon.backend.BACKENDS``)."""
    options: dict[str, object] = {"token": token}
    if opts.transport is not None:  # a test's MockTransport: the http backend's seam
        options["transport"] = opts.transport
    return backend_for(url, **options)


async def _serve_locked(opts: DaemonOptions, *, task_status: TaskStatus[Running]) -> None:
    # Built first: an executor URL no backend serves is a config error before anything starts.
    remote = [(url, _backend(opts, url, opts.token)) for url in opts.executors]
    try:
        await _serve_with(opts, remote, task_status=task_status)
    finally:
        with anyio.CancelScope(shield=True):
            for _, backend in remote:
                await backend.aclose()


async def _serve_with(
    opts: DaemonOptions,
    remote: list[tuple[str, ExecutorBackend]],
    *,
    task_status: TaskStatus[Running],
) -> None:
    store = await open_store(opts.db)
    try:
        async with anyio.create_task_group() as tg:
            daemon = Daemon(
                store,
                clock=opts.clock,
                lost_after=opts.lost_after,
                first_failures_stop=opts.first_failures_stop,
                spec_limits=opts.spec_limits,
                checkpoints=opts.checkpoints,
                checkpoints_keep=opts.checkpoints_keep,
            )
            if opts.local_slots:
                workdir = opts.workdir or opts.db.parent / "executor"
                # The in-process agent always has its own fresh token, known only
                # to this process: on loopback without one, any local user could
                # POST /v1/trials and run commands as us (issue 10.13).
                agent_token = secrets.token_urlsafe(EMBEDDED_TOKEN_BYTES)
                port = await tg.start(
                    partial(
                        serve_agent,
                        callback_token=opts.token,
                        keep_trials_on_exit=opts.keep_local_trials,
                        gpus=gpu_devices.resolve(opts.local_gpus),
                    ),
                    "127.0.0.1",
                    0,
                    workdir,
                    opts.local_slots,
                    agent_token,
                )
                daemon.add_executor(
                    LOCAL_EXECUTOR, _backend(opts, f"http://127.0.0.1:{port}", agent_token)
                )
            for url, backend in remote:
                daemon.add_executor(url, backend)
            app = protected_app(daemon, opts.token, opts.max_request_bytes)
            # Bind first (the port goes into the callback URL), resume every sweep,
            # and only then answer requests: a request during resume would find
            # sweeps without their runners.
            sock = bind_socket(opts.host, opts.port)
            try:
                port = sock.getsockname()[1]
                url = host_url(opts.host, port)
                daemon.callback_url = (
                    f"{callback_base(opts.host, port, opts.advertise_url)}/v1/callbacks"
                )
                await tg.start(daemon.run)
                await tg.start(partial(serve_app, sock=sock), app, opts.host, port)
            except BaseException:
                sock.close()
                raise
            log.info(
                "hbd daemon serving",
                url=url,
                db=str(opts.db),
                executors=list(daemon.pool.executors),
            )
            task_status.started(Running(url=url, daemon=daemon))
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
