"""Running hbd as a service: `serve`, `executor`, `config show` and `doctor`.

``hbd serve`` and ``hbd executor`` load their settings (hbd.settings), set up
logging (hbd.logs), then run until SIGTERM or SIGINT. The first signal stops
them in order: the API stops taking requests, the database is closed, exit
0; running trials (an in-process executor's too) are left running for the
next start to adopt (docs/operations.md). A second signal during that exits
at once (128 + signal number). Under systemd (``Type=notify``) they report
``READY=1`` once the database is open and the API listens, ping the watchdog
while healthy and say ``STOPPING=1`` on the way out (hbd.daemon.systemd).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hbd.cli.base import (
    EXIT_FAILURE,
    EXIT_OK,
    Command,
    UserError,
    address_in_use,
    error,
    leaf_error,
    print_json,
    say,
)
from hbd.errors import ConfigError, ExecutorError, HbdError
from hbd.http import auth_headers, local_url
from hbd.version import __version__

if TYPE_CHECKING:  # imported where used: `hbd --help` must not load the server's libraries
    import anyio.abc

    from hbd.daemon.systemd import Notifier
    from hbd.settings import DaemonSettings, ExecutorSettings


def _log() -> Any:
    import structlog

    return structlog.get_logger("hbd.service")


# hbd.settings.TOKEN_ENV, named here for the help text without importing pydantic.
TOKEN_ENV = "HBD_TOKEN"
# How long the watchdog's self-check may take to answer over loopback.
SELF_CHECK_TIMEOUT_SECONDS = 5.0
# `hbd doctor` gives each executor and the daemon this long to answer.
DOCTOR_TIMEOUT_SECONDS = 5.0
# Exit status after a second signal: what a shell reports for death by it.
SIGNAL_EXIT_BASE = 128

_DAEMON_FLAGS = {
    "host": "--host",
    "port": "--port",
    "db": "--db",
    "local_executor": "--local-executor",
    "executors": "--executor",
    "token_file": "--token-file",
    "log_level": "--log-level",
    "log_format": "--log-format",
    "advertise_url": "--advertise-url",
    "local_gpus": "--gpus",
    "checkpoints": "--checkpoints",
    "checkpoints_keep": "--checkpoints-keep",
}
_EXECUTOR_FLAGS = {
    "host": "--host",
    "port": "--port",
    "slots": "--slots",
    "workdir": "--workdir",
    "trial_cwd": "--trial-cwd",
    "retain": "--retain",
    "gpus": "--gpus",
    "token_file": "--token-file",
    "log_level": "--log-level",
    "log_format": "--log-format",
}


# ---------------------------------------------------------------- shared


def _config_arg(p: argparse.ArgumentParser, env: str) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help=f"TOML settings file (default: ${env}; no file when unset)",
    )


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port (0: any free port)")
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"file holding the bearer token (else ${TOKEN_ENV}, else token_file)",
    )
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        default=None,
        choices=["auto", "json", "console"],
        help="auto: console on a terminal, JSON lines otherwise",
    )


def _overrides(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, Any]:
    return {key: getattr(args, key, None) for key in flags}


def _load(
    kind: type[DaemonSettings] | type[ExecutorSettings],
    args: argparse.Namespace,
    flags: dict[str, str],
    *,
    strict: bool = True,
) -> Any:
    try:
        return kind.load(
            config=args.config,
            overrides=_overrides(args, flags),
            flags=flags,
            require_token_beyond_loopback=strict,
        )
    except ConfigError as exc:
        raise UserError(f"config error: {exc}") from None


def _forget_secrets_in_environment() -> None:
    # Trial processes inherit the environment: they must not get the token.
    os.environ.pop(TOKEN_ENV, None)


async def _run_until_signalled(
    serve: Callable[[anyio.abc.TaskGroup, Any], Awaitable[None]], notifier: Any
) -> None:
    """Run ``serve(tg, scope)``; first SIGTERM/SIGINT cancels it, a second exits at once."""
    import anyio

    service = anyio.CancelScope()

    async def watch_signals(
        *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            stopping = False
            async for signum in signals:
                name = signal.Signals(signum).name
                if stopping:
                    _log().warning("second signal: exiting at once", signal=name)
                    os._exit(SIGNAL_EXIT_BASE + signum)
                stopping = True
                _log().info("stopping", signal=name)
                notifier.stopping()
                service.cancel()

    async with anyio.create_task_group() as outer:
        await outer.start(watch_signals)
        with service:
            async with anyio.create_task_group() as tg:
                await serve(tg, service)
        outer.cancel_scope.cancel()


def _run_service(
    main: Callable[[], Awaitable[None]], what: str, listen: tuple[str, int] | None = None
) -> int:
    import anyio

    try:
        anyio.run(main, backend="asyncio")
    except KeyboardInterrupt:  # a SIGINT before the handlers were installed
        return EXIT_OK
    except BaseException as exc:
        leaf = leaf_error(exc)
        if isinstance(leaf, (KeyboardInterrupt, SystemExit)):
            raise leaf from None
        if not isinstance(leaf, (HbdError, OSError, ValueError)):
            raise
        # Expected failures (port in use, unreadable database, newer schema): one line.
        message = leaf.strerror if isinstance(leaf, OSError) and leaf.strerror else str(leaf)
        if listen is not None and (in_use := address_in_use(leaf, *listen)):
            message = in_use
        _log().error(f"{what} failed", error=message)
        error(f"{what} failed: {message}")
        return EXIT_FAILURE
    _log().info(f"{what} stopped")
    return EXIT_OK


# ---------------------------------------------------------------- serve


def _args_serve(p: argparse.ArgumentParser) -> None:
    _config_arg(p, "HBD_CONFIG")
    _common_args(p)
    p.add_argument("--db", type=Path, default=None, help="SQLite database file")
    p.add_argument(
        "--local-executor",
        type=int,
        default=None,
        metavar="N",
        help="run an executor with N slots in this process (0: none)",
    )
    p.add_argument(
        "--executor",
        dest="executors",
        action="append",
        default=None,
        metavar="URL",
        help="an executor agent's URL (repeatable; replaces `executors` of the config)",
    )
    p.add_argument(
        "--advertise-url",
        default=None,
        metavar="URL",
        help="the URL executors call back to (default http://HOST:PORT)",
    )
    p.add_argument(
        "--gpus",
        dest="local_gpus",
        default=None,
        metavar="IDS",
        help="GPU devices of the --local-executor: 0,1,... or none (default: what NVML reports)",
    )
    p.add_argument(
        "--checkpoints",
        default=None,
        metavar="PATH|URL",
        help="where checkpoints live: a path every executor mounts, or an fsspec URL "
        "(default: each executor's own directory)",
    )
    p.add_argument(
        "--checkpoints-keep",
        default=None,
        choices=("all", "resumable"),
        help="which checkpoints are kept (default: resumable: what can still be resumed "
        "and the best trial's lineage)",
    )


def _start_service(settings: DaemonSettings | ExecutorSettings) -> tuple[str | None, Notifier]:
    """What both services do first: take the token, set up logs, find systemd."""
    from hbd import logs
    from hbd.daemon.systemd import Notifier
    from hbd.settings import token_file_mode_problem

    token = settings.token
    _forget_secrets_in_environment()
    logs.configure(settings.log_level, settings.log_format, secrets=[token] if token else [])
    if settings.token_file and (problem := token_file_mode_problem(settings.token_file)):
        _log().warning(problem)
    return token, Notifier.from_env()


def cmd_serve(args: argparse.Namespace) -> int:
    import httpx

    from hbd.api.server import DaemonOptions, serve_daemon
    from hbd.cli.token_env import hide_token_from_environ
    from hbd.daemon.systemd import watchdog
    from hbd.settings import DaemonSettings
    from hbd.store.files import private_dir

    hide_token_from_environ("serve")  # may re-exec (hbd.cli.token_env)
    settings: DaemonSettings = _load(DaemonSettings, args, _DAEMON_FLAGS)
    token, notifier = _start_service(settings)
    if not settings.executors and not settings.local_executor:
        _log().warning("no executors configured: sweeps will wait; set executors or local_executor")
    try:
        private_dir(settings.db.parent)  # 0700 when created (hbd.store.files)
    except OSError as exc:
        raise UserError(f"db: cannot create {settings.db.parent}: {exc.strerror}") from None
    from hbd.core.limits import SpecLimits

    opts = DaemonOptions(
        db=settings.db,
        host=settings.host,
        port=settings.port,
        local_slots=settings.local_executor,
        workdir=settings.local_workdir,
        executors=list(settings.executors),
        token=token,
        lost_after=settings.lost_after,
        max_request_bytes=settings.max_request_bytes,
        spec_limits=SpecLimits(
            max_trial_runs=settings.max_trial_runs, max_bytes=settings.max_spec_bytes
        ),
        advertise_url=settings.advertise_url,
        keep_local_trials=settings.keep_trials_on_exit,
        first_failures_stop=settings.first_failures_stop,
        local_gpus=settings.local_gpus,
        checkpoints=settings.checkpoints,
        checkpoints_keep=settings.checkpoints_keep,
    )

    async def serve(tg: anyio.abc.TaskGroup, _: anyio.CancelScope) -> None:
        running = await tg.start(serve_daemon, opts)
        port = int(running.url.rsplit(":", 1)[1])
        self_url = local_url(settings.host, port)
        headers = auth_headers(token)

        async def healthy() -> bool:
            # The API answers and the database answers: the loops are alive. A 503
            # while the log cannot be written is alive too: the daemon heals by
            # itself once the disk does, and a watchdog restart would not help.
            async with httpx.AsyncClient(
                timeout=SELF_CHECK_TIMEOUT_SECONDS, headers=headers
            ) as http:
                ok = (await http.get(f"{self_url}/healthz")).status_code in (200, 503)
            await running.daemon.store.ping()
            return ok

        # Where the sweeps are: the first question after "is it up?". A log line,
        # so that stderr stays one format (JSON lines under systemd).
        _log().info("hbd serve ready", url=running.url, db=str(settings.db.resolve()))
        notifier.ready(f"serving on {running.url}")
        tg.start_soon(watchdog, notifier, healthy)

    return _run_service(
        lambda: _run_until_signalled(serve, notifier),
        "hbd serve",
        (settings.host, settings.port),
    )


# ---------------------------------------------------------------- executor


def _args_executor(p: argparse.ArgumentParser) -> None:
    _config_arg(p, "HBD_EXECUTOR_CONFIG")
    _common_args(p)
    p.add_argument("--slots", type=int, default=None, help="trials run at once (default 1)")
    p.add_argument(
        "--workdir", type=Path, default=None, help="where trial directories and results live"
    )
    p.add_argument("--trial-cwd", type=Path, default=None, help="where trials run (default: here)")
    p.add_argument(
        "--retain",
        default=None,
        metavar="DURATION",
        help="keep finished trials this long after the daemon took them (e.g. 7d, 36h; default 7d)",
    )
    p.add_argument(
        "--gpus",
        default=None,
        metavar="IDS",
        help="GPU devices trials get: 0,1,... or none (default: what NVML reports)",
    )


def cmd_executor(args: argparse.Namespace) -> int:
    import httpx

    from hbd import gpus
    from hbd.api.agent_routes import serve_agent
    from hbd.cli.token_env import hide_token_from_environ
    from hbd.daemon.systemd import watchdog
    from hbd.executor.agent import AgentLimits
    from hbd.settings import ExecutorSettings

    hide_token_from_environ("executor")  # may re-exec (hbd.cli.token_env)
    settings: ExecutorSettings = _load(ExecutorSettings, args, _EXECUTOR_FLAGS)
    token, notifier = _start_service(settings)

    devices = gpus.resolve(settings.gpus)

    async def serve(tg: anyio.abc.TaskGroup, _: anyio.CancelScope) -> None:
        agent = partial(
            serve_agent,
            callback_token=token,
            trial_cwd=settings.trial_cwd,
            keep_trials_on_exit=settings.keep_trials_on_exit,
            max_metrics_file_bytes=settings.max_metrics_file_bytes,
            gpus=devices,
            limits=AgentLimits(
                log_cap_bytes=settings.log_cap_bytes,
                retain_seconds=settings.retain,
                retain_trials=settings.retain_trials,
                checkpoint_copy_bytes=settings.max_checkpoint_copy_bytes,
            ),
        )
        port = await tg.start(
            agent, settings.host, settings.port, settings.workdir, settings.slots, token
        )
        url = local_url(settings.host, port)

        async def healthy() -> bool:
            async with httpx.AsyncClient(timeout=SELF_CHECK_TIMEOUT_SECONDS) as http:
                return (await http.get(f"{url}/v1/health")).status_code == 200

        _log().info(
            "hbd executor serving",
            url=f"http://{settings.host}:{port}",
            slots=settings.slots,
            workdir=str(settings.workdir),
            gpus=",".join(devices) or "none",
        )
        notifier.ready(f"serving on port {port} with {settings.slots} slot(s)")
        tg.start_soon(watchdog, notifier, healthy)

    return _run_service(
        lambda: _run_until_signalled(serve, notifier),
        "hbd executor",
        (settings.host, settings.port),
    )


# ---------------------------------------------------------------- config show


def _args_config(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser(
        "show",
        help="print the effective settings (the token masked)",
        description="print the effective settings (the token masked)",
    )
    show.add_argument(
        "service",
        nargs="?",
        choices=["daemon", "executor"],
        default="daemon",
        help="whose settings (default: daemon)",
    )
    show.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="TOML settings file (default: $HBD_CONFIG / $HBD_EXECUTOR_CONFIG)",
    )
    show.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_config(args: argparse.Namespace) -> int:
    from hbd.settings import DaemonSettings, ExecutorSettings

    kind = ExecutorSettings if args.service == "executor" else DaemonSettings
    # Show what would run, even if serving it would be refused; say why after.
    settings = _load(kind, args, {}, strict=False)
    values = settings.public()
    origins = dict(settings.origins)
    if args.json:
        print_json({"service": args.service, "settings": values, "sources": origins})
    else:
        width = max(len(k) for k in values)
        for key, value in values.items():
            shown = json.dumps(value) if not isinstance(value, str) else value
            say(f"{key:<{width}} = {shown}    # {origins.get(key, 'default')}")
    try:
        settings.check_exposure()
    except ConfigError as exc:
        print(f"warning: serving these settings would be refused: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


# ---------------------------------------------------------------- doctor


class _Findings:
    def __init__(self) -> None:
        self.failures = 0
        self.warnings = 0

    def ok(self, what: str) -> None:
        say(f"ok    {what}")

    def warn(self, what: str, fix: str | None = None) -> None:
        self.warnings += 1
        say(f"warn  {what}")
        if fix:
            say(f"      fix: {fix}")

    def fail(self, what: str, fix: str) -> None:
        self.failures += 1
        say(f"FAIL  {what}")
        say(f"      fix: {fix}")


def _args_doctor(p: argparse.ArgumentParser) -> None:
    _config_arg(p, "HBD_CONFIG")
    p.add_argument("--db", type=Path, default=None, help="SQLite database file")
    p.add_argument(
        "--executor",
        dest="executors",
        action="append",
        default=None,
        metavar="URL",
        help="an executor agent's URL to check (repeatable)",
    )
    p.add_argument("--token-file", type=Path, default=None, metavar="PATH")
    p.add_argument(
        "--url",
        default=None,
        help="the running daemon to ask about its executors (default: $HBD_URL, "
        "else the host and port of the settings)",
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    import anyio

    from hbd.settings import DaemonSettings

    flags = {"db": "--db", "executors": "--executor", "token_file": "--token-file"}
    settings: DaemonSettings = _load(DaemonSettings, args, flags, strict=False)
    f = _Findings()
    where = args.config or os.environ.get("HBD_CONFIG")
    f.ok(
        f"settings: valid ({'from ' + where if where else 'no config file; defaults and environment'})"
    )
    _doctor_token(settings, f)
    _doctor_database(settings, f)
    _doctor_checkpoints(settings, f)
    from hbd.cli.remote import daemon_url

    explicit = bool(args.url or os.environ.get("HBD_URL"))
    url = daemon_url(args) if explicit else local_url(settings.host, settings.port)
    anyio.run(_doctor_remote, settings, f, url, explicit)
    say("")
    if f.failures:
        say(f"{f.failures} problem(s), {f.warnings} warning(s)")
        return EXIT_FAILURE
    say(f"no problems found ({f.warnings} warning(s))")
    return EXIT_OK


def _doctor_token(settings: DaemonSettings, f: _Findings) -> None:
    from hbd.settings import is_loopback, token_file_mode_problem

    origin = settings.origins.get("token", "none")
    if settings.token is None:
        if is_loopback(settings.host):
            f.ok(f"token: none; the API is open to every user of this host ({settings.host})")
        else:
            f.fail(
                f"token: none, but host {settings.host} is reachable from other machines",
                "write a token (`openssl rand -hex 32`) to a file readable only by hbd "
                "and set token_file",
            )
        return
    f.ok(f"token: set (from {origin})")
    if settings.token_file and (problem := token_file_mode_problem(settings.token_file)):
        f.warn(problem)


def _doctor_checkpoints(settings: DaemonSettings, f: _Findings) -> None:
    """ckpt helper: where checkpoints live and which are kept (validated by the settings)."""
    keep = settings.checkpoints_keep
    kept = "all kept" if keep == "all" else "kept: what can still be resumed + the best's lineage"
    store = settings.checkpoints
    if store is None:
        f.ok(
            f"checkpoints: each executor's own directory; a promotion runs where its parent ran; {kept}"
        )
        return
    if "://" in store:
        f.ok(f"checkpoints: fsspec URL {store} (executors need hbd[checkpoints]); {kept}")
        return
    path = Path(store)
    if not path.is_dir():
        f.warn(
            f"checkpoints: {store} is not a directory here",
            "mount it on this host and on every executor (the daemon deletes through it)",
        )
    elif not os.access(path, os.W_OK | os.X_OK):
        f.warn(f"checkpoints: {store} is not writable here", "give the hbd user write access")
    else:
        f.ok(f"checkpoints: shared directory {store}; {kept}")


def _doctor_database(settings: DaemonSettings, f: _Findings) -> None:
    from hbd.store.check import WAL_WARN_BYTES, inspect_database

    path = settings.db
    report = inspect_database(path)
    if not report.exists:
        parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
        if parent is not None and os.access(parent, os.W_OK):
            f.warn(f"database: {path} does not exist yet", "`hbd serve` creates it on start")
        else:
            f.fail(
                f"database: {path} does not exist and {path.parent} is not writable",
                "create the directory for the hbd user, or set db (StateDirectory= under systemd)",
            )
        return
    if report.error is not None:
        f.fail(
            f"database: {path}: {report.error}",
            "restore the file from a backup; if it is not an hbd database, fix `db`",
        )
        return
    if report.integrity != ["ok"]:
        shown = "; ".join(report.integrity[:3])
        f.fail(
            f"database: integrity check failed: {shown}",
            "stop hbd, copy the file aside, restore a backup or `sqlite3 hbd.db .recover`",
        )
    else:
        f.ok(f"database: {path}: integrity ok, {report.sweeps} sweep(s), {report.events} event(s)")
    version, current = report.schema_version or 0, report.current_version
    if version > current:
        f.fail(
            f"database: schema version {version} is newer than this hbd knows ({current})",
            "upgrade hbd to the version that wrote it (the file was not changed)",
        )
    elif version < current:
        f.warn(
            f"database: schema version {version}; this hbd migrates it to {current} on start",
            "back the file up before the first start of the new version",
        )
    else:
        f.ok(f"database: schema version {version} (current)")
    if report.journal_mode != "wal":
        f.fail(
            f"database: journal mode is {report.journal_mode}, not wal",
            "start `hbd serve` once (it enables WAL), or keep the file off network filesystems",
        )
    elif report.wal_bytes > WAL_WARN_BYTES:
        f.warn(
            f"database: WAL file is {report.wal_bytes // (1024 * 1024)} MiB: something keeps "
            "SQLite from checkpointing",
            "close long-running readers (sqlite3 shells, backups)",
        )
    else:
        f.ok(f"database: WAL mode, WAL file {report.wal_bytes} bytes")


async def _doctor_remote(settings: DaemonSettings, f: _Findings, url: str, explicit: bool) -> None:
    """Ask the running daemon first: what it sees (its executors, their slots) is
    the truth, not this host's defaults. Only with no daemon to ask are the
    configured executors checked one by one."""
    health = await _doctor_daemon(settings, f, url, explicit)
    if health is not None:
        _doctor_daemon_executors(url, health, f)
        return
    await _doctor_configured_executors(settings, f)


def _doctor_daemon_executors(url: str, health: dict[str, Any], f: _Findings) -> None:
    executors = health.get("executors") or []
    if not executors:
        f.fail(
            f"daemon {url}: has no executor; submitted sweeps wait",
            "restart it with --local-executor N or --executor URL (executors = [...] in its config)",
        )
    for e in executors:
        name = f"executor {e.get('name')} ({e.get('url')})"
        if e.get("healthy"):
            f.ok(
                f"{name}: healthy, {e.get('slots')} slot(s), {e.get('free')} free (as the daemon sees it)"
            )
        else:
            f.fail(
                f"{name}: the daemon cannot reach it",
                "start `hbd executor` there (systemctl start hbd-executor), or fix the URL "
                "and the token file the daemon uses",
            )
    if health.get("queued_trials"):
        f.warn(f"daemon {url}: {health['queued_trials']} trial run(s) waiting for a free slot")


async def _doctor_configured_executors(settings: DaemonSettings, f: _Findings) -> None:
    import anyio

    from hbd.daemon.backend import backend_for
    from hbd.errors import ExecutorRejected
    from hbd.protocol import PROTOCOL_VERSION

    token = settings.token
    if settings.local_executor:
        f.ok(f"executor local: {settings.local_executor} slot(s) in the daemon's process")
    if not settings.executors and not settings.local_executor:
        f.fail(
            "executors: none configured; submitted sweeps would never run",
            'set executors = ["http://HOST:8766"] or local_executor = N',
        )
    for url in settings.executors:
        client = backend_for(url, token=token)  # placement: any scheme's backend
        try:
            with anyio.fail_after(DOCTOR_TIMEOUT_SECONDS):
                health = await client.health(single=True)  # one attempt: a person waits
        except TimeoutError:
            f.fail(
                f"executor {url}: no answer in {DOCTOR_TIMEOUT_SECONDS:g} s",
                "check that `hbd executor` runs there and the port is open",
            )
            continue
        except ExecutorRejected as exc:
            f.fail(f"executor {url}: {exc}", "check the URL points at an `hbd executor` /v1 API")
            continue
        except ExecutorError as exc:
            f.fail(
                f"executor {url}: unreachable ({exc})",
                "start `hbd executor` there (systemctl start hbd-executor) or fix the URL",
            )
            continue
        finally:
            await client.aclose()
        # Health is open; a trial listing needs the token: check it matches.
        auth = await _executor_accepts_token(url, token)
        if health.protocol != PROTOCOL_VERSION:
            f.fail(
                f"executor {url}: speaks protocol {health.protocol}, "
                f"this hbd speaks {PROTOCOL_VERSION}",
                "upgrade the older of the two",
            )
        elif auth is False:
            f.fail(
                f"executor {url}: refuses our token (401)",
                "give the daemon and the executor the same token file",
            )
        else:
            note = "" if health.version == __version__ else f" (hbd {__version__} here)"
            f.ok(
                f"executor {url}: hbd {health.version}{note}, {health.slots} slot(s), "
                f"{health.free_slots} free"
            )
            if note:
                f.warn(
                    f"executor {url}: version {health.version} differs from {__version__}",
                    "upgrade executors together with the daemon",
                )


async def _executor_accepts_token(url: str, token: str | None) -> bool | None:
    import httpx

    headers = auth_headers(token)
    try:
        async with httpx.AsyncClient(timeout=DOCTOR_TIMEOUT_SECONDS, headers=headers) as http:
            response = await http.get(f"{url}/v1/trials", params={"sweep_id": "-"})
    except httpx.HTTPError:
        return None
    return response.status_code != 401


async def _doctor_daemon(
    settings: DaemonSettings, f: _Findings, url: str, explicit: bool
) -> dict[str, Any] | None:
    """The daemon's /healthz, or None when there is no daemon to ask."""
    import anyio

    from hbd.cli.remote import read_token
    from hbd.client import Client, ClientError

    token = settings.token or read_token(None)
    try:
        async with Client(url, token=token) as client:
            with anyio.fail_after(DOCTOR_TIMEOUT_SECONDS):
                health = await client.health()
                await client.sweeps()  # needs the token, when one is set
    except TimeoutError:
        f.fail(
            f"daemon {url}: no answer in {DOCTOR_TIMEOUT_SECONDS:g} s",
            "check its logs (journalctl -u hbd); it may be stuck",
        )
        return None
    except ClientError as exc:
        if exc.status is None and not explicit:
            f.ok(f"daemon {url}: not running (`hbd serve` or systemctl start hbd)")
        elif exc.status is None:
            f.fail(f"daemon {url}: {exc}", "start it, or point --url at the running daemon")
        else:
            f.fail(f"daemon {url}: {exc}", "use the daemon's token file (--token-file)")
        return None
    f.ok(
        f"daemon {url}: running hbd {health.get('version')}, "
        f"{health.get('running_sweeps')} running sweep(s)"
    )
    return health


COMMANDS: tuple[Command, ...] = (
    Command(
        "serve", "run the daemon (API, sweeps, executors) until SIGTERM", _args_serve, cmd_serve
    ),
    Command(
        "executor",
        "run an executor agent that runs trials on this host",
        _args_executor,
        cmd_executor,
    ),
    Command("config", "show the effective settings", _args_config, cmd_config),
    Command(
        "doctor",
        "check the database, executors and settings; say what to fix",
        _args_doctor,
        cmd_doctor,
    ),
)
