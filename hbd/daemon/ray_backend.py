"""Trials on a Ray cluster: one Ray job per trial run, through Ray's Job REST API.

``--executor ray://HOST:PORT`` names the cluster's job server (the dashboard,
port 8265 unless the cluster says otherwise). Each trial run becomes one Ray
job whose ``submission_id`` is ``hbd-<trial id>-run<run>`` and whose
entrypoint is ``python -m hbd.executor.ray_runner``: the agent's supervisor,
metrics tail and verdict, on the node Ray picks (see that module). Why jobs
rather than a Ray Client (``ray://HOST:10001``) session with a detached actor
per trial:

- **Idempotency and re-attachment come from Ray itself.** Ray refuses a
  second job with the same submission id, and keeps every job's status,
  metadata and log in the cluster, so a submit repeated after a timeout, or
  a daemon restarted mid-sweep, finds the same job: nothing runs twice, and
  no hbd state lives on the daemon's side.
- **No Ray in the daemon.** The Job API is documented REST (OpenAPI), spoken
  here with httpx like the agent's /v1 API: no ``ray.init`` (a driver with
  its own workers and a version lock-step between daemon and cluster), no
  ``ray`` import at all in the daemon. ``hbd[ray]`` is needed on the nodes.
- **Resources and stop are Ray's.** ``entrypoint_num_cpus`` /
  ``entrypoint_num_gpus`` reserve the trial's ``cpu`` and ``nvidia.com/gpu``
  (Ray sets CUDA_VISIBLE_DEVICES), a trial waits PENDING until they are free,
  and ``stop`` signals the entrypoint's whole process tree.

Metrics stream back twice, as with the agent: the runner pushes callbacks to
the daemon, and prints each line to the job log, which :meth:`RayBackend.status`
and :meth:`RayBackend.metrics` read (``@hbd-metrics SEQ {...}``, then one
``@hbd-status {...}`` with the verdict).

URL query options: ``python`` (the interpreter on the nodes that has hbd;
default ``python3``), ``workdir`` (where trial directories and default
checkpoints go on the nodes; default ``/tmp/hbd-ray``).
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import structlog
from pydantic import ValidationError

from hbd.errors import ConfigError, ExecutorRejected, ExecutorUnavailable, NotFound
from hbd.protocol import (
    MAX_METRICS_PAGE_LINES,
    Health,
    MetricsLine,
    MetricsPage,
    TrialStatus,
    TrialSubmission,
)

log = structlog.get_logger(__name__)

# The runner's module and its protocol (kept in step with hbd.executor.ray_runner,
# which the daemon does not import: it runs on the cluster).
RUNNER_MODULE = "hbd.executor.ray_runner"
SUBMISSION_ENV = "HBD_RAY_SUBMISSION"
WORKDIR_ENV = "HBD_RAY_WORKDIR"
CALLBACK_TOKEN_ENV = "HBD_RAY_CALLBACK_TOKEN"
METRICS_PREFIX = "@hbd-metrics "
STATUS_PREFIX = "@hbd-status "

DEFAULT_PORT = 8265  # Ray's dashboard / job server
DEFAULT_PYTHON = "python3"
DEFAULT_WORKDIR = "/tmp/hbd-ray"
# Our jobs' metadata: which trial and run a job is (re-attachment lists jobs by it).
META_TRIAL = "hbd_trial_id"
META_RUN = "hbd_run"
META_SWEEP = "hbd_sweep_id"
META_DIGEST = "hbd_digest"
# The submission travels in one environment variable of the job, and Linux
# caps one variable at 128 KiB (MAX_ARG_STRLEN): refuse what would not start.
MAX_RAY_SUBMISSION_BYTES = 120 * 1024
# A job server answers in milliseconds; a submit that takes longer is stuck
# and the retry (same submission id) is safe.
RAY_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
HEALTH_TIMEOUT = httpx.Timeout(2.0, connect=1.0)
# A running job's log is read at most this often per trial: status and
# metrics calls in a burst share one read.
LOG_REFRESH_SECONDS = 0.2
# The log of one job read back (the runner bounds the metrics it prints to
# 8 MiB; the rest is headroom for its own diagnostics). Beyond it the job is
# failed rather than read without bound.
MAX_RAY_LOG_BYTES = 16 * 1024 * 1024
# Finished jobs whose parsed log is kept in memory (their pages are read
# right after they end); older ones are read again from Ray when asked.
MAX_CACHED_FINISHED = 256
# How long cancel waits for the job to end (Ray: SIGTERM, 3 s, SIGKILL).
CANCEL_WAIT_SECONDS = 10.0
CANCEL_POLL_SECONDS = 0.1
STDERR_TAIL_BYTES = 4096
# Trials of one Ray cluster as slots: one per CPU (a trial asks for 1 by default).
DEFAULT_TRIAL_CPUS = 1.0

CANCEL_REASON = "cancelled by request"
_ACTIVE = frozenset({"PENDING", "RUNNING"})
# Fields that are routing, not the trial (as on the agent): a restarted daemon
# sends the same trial with a new callback URL.
_ROUTING_FIELDS = {"callback_url"}


def job_name(trial_id: str, run: int) -> str:
    """The Ray submission id of one trial run: the idempotency key."""
    return f"hbd-{trial_id}-run{run}"


def digest(sub: TrialSubmission) -> str:
    body = json.dumps(sub.model_dump(mode="json", exclude=_ROUTING_FIELDS), sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def cpu_quantity(text: str) -> float:
    """A Kubernetes CPU quantity (``2``, ``0.5``, ``500m``) in cores."""
    value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def _meta(info: Any) -> dict[str, Any]:
    """A job's metadata: a dict whatever the cluster answered."""
    meta = info.get("metadata") if isinstance(info, dict) else None
    return meta if isinstance(meta, dict) else {}


def _seconds(millis: Any) -> float | None:
    """A job time (Ray gives milliseconds); None if absent or not a usable number."""
    if isinstance(millis, bool) or not isinstance(millis, (int, float)):
        return None
    try:
        value = millis / 1000
    except OverflowError:
        return None
    return value if math.isfinite(value) and value > 0 else None


@dataclass
class _Job:
    """What the log of one job said, parsed once and extended as it grows."""

    name: str
    trial_id: str
    run: int
    lines: list[MetricsLine] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    final: TrialStatus | None = None
    log_bytes: int = 0  # of the log parsed so far
    read_at: float = -math.inf
    info: dict[str, Any] = field(default_factory=dict)


class RayBackend:
    """One Ray cluster, as an hbd executor (``ExecutorBackend``)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        **_: Any,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ray" or not parts.hostname:
            raise ConfigError(f"executor {url!r}: expected ray://HOST:PORT")
        self.url = url
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.python = query.get("python", DEFAULT_PYTHON)
        self.workdir = query.get("workdir", DEFAULT_WORKDIR)
        port = parts.port or DEFAULT_PORT
        self.base = f"http://{parts.hostname}:{port}"
        self._token = token
        self._http = httpx.AsyncClient(base_url=self.base, timeout=RAY_TIMEOUT, transport=transport)
        self._latest: dict[str, str] = {}  # trial id -> its latest run's job name
        self._jobs: dict[str, _Job] = {}  # active (or not yet seen finished)
        self._finished: OrderedDict[str, _Job] = OrderedDict()
        self._locks: dict[str, anyio.Lock] = {}

    def describe(self) -> str:
        return f"Ray cluster at {self.base} (jobs run {self.python} -m {RUNNER_MODULE})"

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- HTTP ---------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ExecutorUnavailable(f"{self.base}: {exc!r}", maybe_sent=False) from exc
        except httpx.HTTPError as exc:
            raise ExecutorUnavailable(f"{self.base}: {exc!r}", maybe_sent=True) from exc

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        if response.status_code == 404:
            raise NotFound(f"Ray cluster {self.base}: {path} not found")
        if response.status_code >= 500:
            raise ExecutorUnavailable(
                f"{self.base}{path}: HTTP {response.status_code}: {response.text[:200]}"
            )
        if response.status_code >= 400:
            raise ExecutorRejected(
                f"{self.base}{path}: HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            return response.json()
        except ValueError:
            raise ExecutorRejected(f"malformed answer from {self.base}{path}") from None

    # -- finding a trial's job ----------------------------------------------

    async def _job_of(self, trial_id: str) -> str:
        """The job of the trial's latest run; NotFound if the cluster has none."""
        name = self._latest.get(trial_id)
        if name is not None:
            return name
        # A daemon restarted (or another instance): ask the cluster.
        jobs = await self._json("GET", "/api/jobs/")
        best: tuple[int, str] | None = None
        for item in jobs if isinstance(jobs, list) else []:
            meta = _meta(item)
            if meta.get(META_TRIAL) != trial_id:
                continue
            try:
                run = int(meta.get(META_RUN, "1"))
            except (TypeError, ValueError):
                continue
            # Metadata alone is anyone's to write: only the job hbd itself named
            # for this run (job_name, which Ray keeps unique) is the trial's.
            if item.get("submission_id") != job_name(trial_id, run):
                continue
            candidate = (run, str(item.get("submission_id")))
            if best is None or candidate > best:
                best = candidate
        if best is None:
            raise NotFound(f"Ray cluster {self.base} does not know trial {trial_id}")
        self._latest[trial_id] = best[1]
        return best[1]

    def _lock(self, name: str) -> anyio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = anyio.Lock()
        return lock

    async def _refresh(self, name: str, *, force: bool = False) -> _Job:
        """The job's info and parsed log, read again if running and not read just now."""
        async with self._lock(name):
            job = self._finished.get(name) or self._jobs.get(name)
            now = time.monotonic()
            if job is not None and (
                (job.info and job.info.get("status") not in _ACTIVE)
                or (not force and now - job.read_at < LOG_REFRESH_SECONDS)
            ):
                return job
            info = await self._json("GET", f"/api/jobs/{name}")
            if not isinstance(info, dict):
                raise ExecutorRejected(f"malformed answer from {self.base} about job {name}")
            meta = _meta(info)
            if job is None:
                try:
                    run = int(meta.get(META_RUN, "1"))
                except (TypeError, ValueError):
                    raise ExecutorRejected(f"job {name} on {self.base}: bad {META_RUN}") from None
                job = _Job(name=name, trial_id=str(meta.get(META_TRIAL, "")), run=run)
                self._jobs[name] = job
            job.info = info
            job.read_at = now
            if info.get("status") not in ("PENDING",):
                await self._read_log(job)
            if info.get("status") not in _ACTIVE:
                self._jobs.pop(name, None)
                self._finished[name] = job
                while len(self._finished) > MAX_CACHED_FINISHED:
                    old, _ = self._finished.popitem(last=False)
                    self._locks.pop(old, None)
            return job

    async def _read_log(self, job: _Job) -> None:
        data = await self._json("GET", f"/api/jobs/{job.name}/logs")
        text = data.get("logs", "") if isinstance(data, dict) else ""
        raw = text.encode()
        if len(raw) > MAX_RAY_LOG_BYTES:
            raw = raw[:MAX_RAY_LOG_BYTES]
        # Only whole lines past what was parsed; the log only grows.
        end = raw.rfind(b"\n") + 1
        if end <= job.log_bytes:
            return
        # "\n" only, never str.splitlines(): that also splits on U+2028, NEL...,
        # which the runner's JSON leaves raw inside a line (a metric's name, a
        # failed trial's stderr tail), and the verdict line would be lost.
        for line in raw[job.log_bytes : end].decode(errors="replace").split("\n"):
            self._parse_line(job, line.removesuffix("\r"))
        job.log_bytes = end

    @staticmethod
    def _parse_line(job: _Job, line: str) -> None:
        if line.startswith(METRICS_PREFIX):
            seq_text, _, body = line[len(METRICS_PREFIX) :].partition(" ")
            try:
                seq = int(seq_text)
                metrics = json.loads(body)
                parsed = MetricsLine(seq=seq, metrics=metrics)
            except (ValueError, ValidationError):
                return
            if seq == len(job.lines) + 1:  # in order, once
                job.lines.append(parsed)
                job.metrics.update(parsed.metrics)
        elif line.startswith(STATUS_PREFIX):
            try:
                job.final = TrialStatus.model_validate_json(line[len(STATUS_PREFIX) :])
            except ValidationError:
                pass

    def _status(self, job: _Job) -> TrialStatus:
        info = job.info
        meta = _meta(info)
        state = info.get("status")
        started = _seconds(info.get("start_time")) or time.time()
        ended = _seconds(info.get("end_time"))
        base = TrialStatus(
            id=job.trial_id,
            sweep_id=str(meta.get(META_SWEEP, "")),
            run=job.run,
            state="running",
            metrics=dict(job.metrics),
            metrics_seq=len(job.lines),
            started_at=started,
        )
        if job.final is not None and state in _ACTIVE | {"SUCCEEDED"}:
            # The runner printed its verdict (and is exiting): the trial is over.
            return job.final
        if state in _ACTIVE:
            return base
        ended_at = ended or time.time()
        if state == "STOPPED":
            return base.model_copy(
                update={"state": "cancelled", "reason": CANCEL_REASON, "ended_at": ended_at}
            )
        message = info.get("message") or f"Ray job {job.name} ended {state}"
        code = info.get("driver_exit_code")  # model_copy below does not validate
        return base.model_copy(
            update={
                "state": "failed",
                "reason": f"Ray job {job.name}: {message}"[:2000],
                "exit_code": code if type(code) is int and abs(code) < 2**31 else None,
                "ended_at": ended_at,
            }
        )

    # -- the backend contract -------------------------------------------------

    async def submit(self, submission: TrialSubmission) -> TrialStatus:
        name = job_name(submission.id, submission.run)
        try:
            job: _Job | None = await self._refresh(name)  # this very run, already sent?
        except NotFound:
            job = None
        if job is not None:
            if _meta(job.info).get(META_DIGEST) != digest(submission):
                raise ExecutorRejected(
                    f"trial {submission.id!r} was already submitted with a different payload"
                )
            self._latest[submission.id] = name
            return self._status(job)
        if submission.run > 1:
            # An earlier run whose job still runs is this run (as on the agent).
            try:
                earlier = await self._refresh(await self._job_of(submission.id))
            except NotFound:
                earlier = None
            if earlier is not None and (
                earlier.run > submission.run
                or (earlier.final is None and earlier.info.get("status") in _ACTIVE)
            ):
                return self._status(earlier)
        body = self._job_body(submission, name)
        response = await self._request("POST", "/api/jobs/", json=body)
        if response.status_code >= 400 and "already exists" not in response.text:
            if response.status_code >= 500:
                raise ExecutorUnavailable(
                    f"{self.base}: submit of {name}: HTTP {response.status_code}: "
                    f"{response.text[-300:]}"
                )
            raise ExecutorRejected(
                f"{self.base} refused {name}: HTTP {response.status_code}: {response.text[-300:]}"
            )
        # Accepted now, or by an earlier attempt whose answer was lost.
        self._latest[submission.id] = name
        log.info("trial submitted to Ray", trial_id=submission.id, job=name)
        return self._status(await self._refresh(name, force=True))

    def _job_body(self, sub: TrialSubmission, name: str) -> dict[str, Any]:
        payload = sub.model_dump_json()
        if len(payload.encode()) > MAX_RAY_SUBMISSION_BYTES:
            raise ExecutorRejected(
                f"trial {sub.id}: the submission takes {len(payload.encode())} bytes, over "
                f"the {MAX_RAY_SUBMISSION_BYTES} a Ray job's environment carries "
                "(MAX_RAY_SUBMISSION_BYTES)"
            )
        env = {SUBMISSION_ENV: payload, WORKDIR_ENV: self.workdir}
        if self._token:
            env[CALLBACK_TOKEN_ENV] = self._token
        cpus = DEFAULT_TRIAL_CPUS
        gpus = 0
        if sub.resources is not None:
            quantity = sub.resources.limits.get("cpu") or sub.resources.requests.get("cpu")
            if quantity is not None:
                try:
                    cpus = cpu_quantity(quantity)
                except ValueError:
                    raise ExecutorRejected(f"trial {sub.id}: bad cpu {quantity!r}") from None
            gpus = sub.resources.gpus
        return {
            "entrypoint": f"{shlex.quote(self.python)} -m {RUNNER_MODULE}",
            "submission_id": name,
            "runtime_env": {"env_vars": env},
            "metadata": {
                META_TRIAL: sub.id,
                META_RUN: str(sub.run),
                META_SWEEP: sub.sweep_id,
                META_DIGEST: digest(sub),
            },
            "entrypoint_num_cpus": cpus,
            "entrypoint_num_gpus": gpus,
        }

    async def status(self, trial_id: str) -> TrialStatus:
        return self._status(await self._refresh(await self._job_of(trial_id)))

    async def metrics(self, trial_id: str, *, after: int, limit: int) -> MetricsPage:
        job = await self._refresh(await self._job_of(trial_id))
        limit = max(1, min(limit, MAX_METRICS_PAGE_LINES))
        return MetricsPage(
            trial_id=trial_id,
            lines=job.lines[max(0, after) : max(0, after) + limit],
            last_seq=len(job.lines),
            run=job.run,
        )

    async def cancel(self, trial_id: str) -> TrialStatus | None:
        try:
            name = await self._job_of(trial_id)
        except NotFound:
            return None
        job = await self._refresh(name, force=True)
        if job.info.get("status") not in _ACTIVE:
            return self._status(job)
        await self._json("POST", f"/api/jobs/{name}/stop")
        log.info("cancelling trial on Ray", trial_id=trial_id, job=name)
        with anyio.move_on_after(CANCEL_WAIT_SECONDS):
            while job.info.get("status") in _ACTIVE:
                await anyio.sleep(CANCEL_POLL_SECONDS)
                job = await self._refresh(name, force=True)
        return self._status(job)

    async def logs(self, trial_id: str, stream: str, offset: int) -> dict[str, Any]:
        """The Ray job's log (the runner's lines; the trial's own stdout and stderr
        stay in its directory on the node, and a failed trial's status carries its
        stderr tail)."""
        name = await self._job_of(trial_id)
        data = await self._json("GET", f"/api/jobs/{name}/logs")
        raw = (data.get("logs", "") if isinstance(data, dict) else "").encode()
        offset = max(0, min(offset, len(raw)))
        chunk = raw[offset : offset + 64 * 1024]
        return {
            "offset": offset,
            "next_offset": offset + len(chunk),
            "size": len(raw),
            "data": chunk.decode(errors="replace"),
            "omitted": 0,
            "marker_start": None,
            "tail_start": None,
        }

    async def delete_checkpoint(self, trial_id: str) -> int:
        """Checkpoints stay in the nodes' workdir: this backend cannot delete them
        (checkpoint retention says so once and leaves them)."""
        raise ExecutorRejected(
            f"{self.base}: the Ray backend cannot delete checkpoints on the cluster's nodes"
        )

    async def health(self, *, single: bool = False) -> Health:
        timeout = HEALTH_TIMEOUT if single else RAY_TIMEOUT
        version = await self._json("GET", "/api/version", timeout=timeout)
        nodes = await self._json("GET", "/api/v0/nodes", params={"limit": 10000}, timeout=timeout)
        cpus = 0.0
        gpus = 0.0
        try:
            for node in nodes["data"]["result"]["result"]:
                if node.get("state") == "ALIVE":
                    total = node.get("resources_total") or {}
                    cpus += float(total.get("CPU", 0))
                    gpus += float(total.get("GPU", 0))
        except (KeyError, TypeError, ValueError):
            raise ExecutorRejected(f"malformed node list from {self.base}") from None
        slots = max(1, int(cpus // DEFAULT_TRIAL_CPUS))
        running = sorted(job.trial_id for job in self._jobs.values())
        devices = [str(i) for i in range(int(gpus))]
        return Health(
            version=f"ray {version.get('ray_version', '?')}",
            slots=slots,
            free_slots=max(0, slots - len(running)),
            running=running,
            gpus=devices,
            free_gpus=devices,
        )


__all__ = ["RayBackend", "job_name"]
