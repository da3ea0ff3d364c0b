"""The executor protocol: JSON over HTTP, versioned under ``/v1``.

The daemon (client) and the reference executor agent (server) share these
models, so that both sides validate the same shapes. Anyone writing an
executor for another engine implements these routes:

``POST /v1/trials``               TrialSubmission -> 201 TrialStatus (started),
                                  200 TrialStatus (same id, same payload: idempotent,
                                  also when finished), 409 (same id, other payload),
                                  422 (invalid, e.g. unknown placeholder),
                                  429 + Retry-After (no free slot, or fewer free GPUs
                                  than resources asks for; the detail says which),
                                  422 also when it asks for more GPUs than the executor has
``GET  /v1/trials/{id}``          TrialStatus or 404
``GET  /v1/trials[?sweep_id=]``   list[TrialStatus]
``POST /v1/trials/{id}/cancel``   TrialStatus (finished trials are returned unchanged) or 404
``GET  /v1/trials/{id}/metrics?after=SEQ&limit=N``
                                  MetricsPage: the trial's metrics lines with seq > SEQ,
                                  in order, at most N (<= MAX_METRICS_PAGE_LINES) or 404
``DELETE /v1/trials/{id}/checkpoint``
                                  CheckpointDeleted: the trial's checkpoint directory on
                                  this executor removed (links in it never followed);
                                  idempotent (0 bytes when already gone or never there);
                                  409 while the trial or one resuming from it runs
``GET  /v1/health``               Health (never needs a token)

When the executor has a token, every route but health needs
``Authorization: Bearer <token>`` (else 401). Bodies above a limit get 413.
Progress and terminal state are pushed to ``TrialSubmission.callback_url`` as
``TrialUpdate`` bodies; the daemon also polls, so callbacks are best effort.
Statuses, updates and pages carry the submission's ``run``: each run of a
trial numbers its metrics lines from 1, and the daemon logs them under it.

Checkpoints: ``TrialSubmission.checkpoint_store`` says where they live.
Absent (``None``, as from daemons before it): the executor's own directory
(``<workdir>/checkpoints/<trial>``), so a trial resuming from a parent runs
where the parent ran. An absolute path: a directory every executor mounts;
trials write ``<path>/<trial>`` and may resume on any executor. A URL
(``s3://bucket/prefix``, any fsspec protocol): the trial writes a local
directory, the executor uploads it to ``<url>/<trial>`` once the run has
succeeded (a failed upload fails the run, naming why) and downloads the
parent's before a resuming trial starts. Copies are bounded by the
executor's ``max_checkpoint_copy_bytes``. An explicit ``checkpoint_dir`` /
``resume_dir`` still wins over the store.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PROTOCOL_VERSION = "1"

# A trial id becomes a directory name on the executor: keep it to a portable,
# shell-free alphabet and well below common NAME_MAX (255 bytes).
MAX_TRIAL_ID_LENGTH = 200
TRIAL_ID_PATTERN = r"^[A-Za-z0-9._-]+$"
# The resource name is also exported as an environment variable (as-is and
# upper-cased), so it must be a valid POSIX variable name.
RESOURCE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# A year: longer is not a timeout but a typo, and it keeps the deadline
# arithmetic far from float overflow.
MAX_TIMEOUT_SECONDS = 366 * 24 * 3600.0
# The reason a trial run stopped by its timeout is failed with (exactly this
# string, so that the daemon and the CLI can count timeouts).
TIMEOUT_REASON = "timeout"
# Highest run number of one trial (TrialSubmission.run): a trial runs again
# only after hbd itself was interrupted under it; a bound keeps the field a
# plain integer everywhere (JSON, SQLite) and refuses 2**63 nonsense.
MAX_TRIAL_RUNS = 1_000_000

# Metrics lines: ``seq`` numbers a trial's lines 1, 2, 3... in the order the
# trial wrote them; the daemon logs each exactly once and fetches what it
# missed with the metrics route. Bounded so that one seq fits SQLite's INTEGER.
MAX_METRICS_SEQ = 2**62
# Lines in one callback or one page: with the agent's per-line bounds
# (hbd.executor.metrics) a full page stays well under a request body limit.
MAX_METRICS_PAGE_LINES = 1000
# Distinct metric keys kept per trial, by the agent and again by the daemon:
# the first ones seen win and the sweep's metric is always kept. A trial
# logging 3000 keys on each of 300 lines took a daemon to 3.5 GB (issue 10.2).
MAX_METRIC_KEYS = 256
# A metric key is a name, not a payload (UTF-8 bytes).
MAX_METRIC_KEY_BYTES = 200
# How deep the NUL scan of a submission goes: params are at most a few levels
# deep, and the body-size limit bounds the rest (no recursion limit reached).
MAX_NUL_SCAN_DEPTH = 64
# A checkpoint store URL: an fsspec protocol name, then "://".
_STORE_URL = re.compile(r"^[a-z][a-z0-9+.-]*://")

# What an executor agent says about the run it holds: running, or an outcome.
# Not the daemon's view of a trial (hbd.core.vocabulary.TrialStatus, which also
# has scheduled, dispatched and interrupted); these words are a subset of it,
# and tests/test_vocabulary.py keeps them so.
AgentTrialState = Literal["running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: frozenset[AgentTrialState] = frozenset({"succeeded", "failed", "cancelled"})


class ResourceValue(BaseModel):
    """The Hyperband resource of one rung, e.g. ``num_steps=27``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=RESOURCE_NAME_PATTERN, max_length=200)
    value: int | float


# Resource names a submission may carry (Polyaxon's container resources that
# mean something to a host or a scheduler).
TRIAL_RESOURCE_NAMES = ("cpu", "memory", "nvidia.com/gpu")
GPU_RESOURCE = "nvidia.com/gpu"
# Devices one trial may ask for: more than any one host carries, and a bound
# that keeps the count a small integer (Kubernetes takes whole GPUs only).
MAX_TRIAL_GPUS = 64


class TrialResources(BaseModel):
    """Polyaxon's container ``resources``: Kubernetes quantities (``2``, ``500m``, ``4Gi``).

    Executors may honour them (GPU placement, limits); the reference agent
    keeps them with the trial.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    limits: dict[str, str] = Field(default_factory=dict)
    requests: dict[str, str] = Field(default_factory=dict)

    @field_validator("limits", "requests")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        for name, quantity in value.items():
            if name not in TRIAL_RESOURCE_NAMES:
                raise ValueError(
                    f"unknown resource {name!r}; use {', '.join(TRIAL_RESOURCE_NAMES)}"
                )
            if not quantity or len(quantity) > 64:
                raise ValueError(f"{name}: invalid quantity {quantity!r}")
        gpus = value.get(GPU_RESOURCE)
        if gpus is not None and not (gpus.isdigit() and int(gpus) <= MAX_TRIAL_GPUS):
            raise ValueError(
                f"{GPU_RESOURCE}: {gpus!r} is not a whole number of devices (0..{MAX_TRIAL_GPUS})"
            )
        return value

    @property
    def gpus(self) -> int:
        """Whole GPU devices the trial asks for: its limit, else its request, else 0."""
        quantity = self.limits.get(GPU_RESOURCE) or self.requests.get(GPU_RESOURCE)
        return int(quantity) if quantity else 0


class TrialSubmission(BaseModel):
    """One trial to run: a configuration at one rung's resource."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=MAX_TRIAL_ID_LENGTH, pattern=TRIAL_ID_PATTERN)
    sweep_id: str = Field(min_length=1)
    command: list[str] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    resource: ResourceValue
    env: dict[str, str] = Field(default_factory=dict)
    metric: str | None = None
    checkpoint_dir: str | None = None
    resume_dir: str | None = None
    resume_from: str | None = Field(
        default=None, max_length=MAX_TRIAL_ID_LENGTH, pattern=TRIAL_ID_PATTERN
    )
    callback_url: str | None = None
    # Polyaxon's termination.timeout: the executor stops a trial run that takes
    # longer (SIGTERM, grace, SIGKILL) and reports it failed with TIMEOUT_REASON.
    timeout_seconds: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_SECONDS)
    # Which run of the trial this is: 1, then one more each time hbd was
    # interrupted under it (`trial.interrupted`). An executor that holds a
    # finished earlier run of the same id starts this one afresh; a repeat of
    # the same run is the same trial, as ever.
    run: int = Field(default=1, ge=1, le=MAX_TRIAL_RUNS)
    # Polyaxon's container workingDir, absolute (clients resolve it against the
    # spec's folder): the trial's cwd; None: the executor's own.
    working_dir: str | None = None
    resources: TrialResources | None = None
    # Where checkpoints live (see the module docstring): None, an absolute
    # path every executor mounts, or an fsspec URL.
    checkpoint_store: str | None = Field(default=None, max_length=4096)

    @model_validator(mode="before")
    @classmethod
    def _no_nul_bytes(cls, data: Any) -> Any:
        # A NUL byte cannot cross execve (argv, environment, paths): refuse it
        # here, naming where it is, rather than fail when the trial starts.
        where = _find_nul(data, "")
        if where is not None:
            raise ValueError(f"{where or 'body'} contains a NUL byte")
        return data

    @field_validator("id", "resume_from")
    @classmethod
    def _not_a_relative_dir(cls, value: str | None) -> str | None:
        if value in (".", ".."):
            raise ValueError("must not be '.' or '..' (it becomes a directory name)")
        return value

    @field_validator("checkpoint_dir", "resume_dir", "working_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not os.path.isabs(value):
            raise ValueError("must be an absolute path")
        return value

    @field_validator("checkpoint_store")
    @classmethod
    def _store(cls, value: str | None) -> str | None:
        if value is not None and not (os.path.isabs(value) or _STORE_URL.match(value)):
            raise ValueError("must be an absolute path or a URL like s3://bucket/prefix")
        return value

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an absolute http(s) URL")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, item in value.items():
            if not name or "=" in name or "\0" in name or "\0" in item:
                raise ValueError(f"invalid environment variable {name!r}")
        return value


def _find_nul(value: Any, path: str, depth: int = 0) -> str | None:
    """The path of the first string (value or key) holding a NUL byte, if any."""
    if isinstance(value, str):
        return path if "\0" in value else None
    if depth > MAX_NUL_SCAN_DEPTH:
        return None  # deeper than any real submission; pydantic still validates the types
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\0" in key:
                return inner
            found = _find_nul(item, inner, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _find_nul(item, f"{path}[{i}]", depth + 1)
            if found is not None:
                return found
    return None


class TrialStatus(BaseModel):
    """What an executor knows about one trial."""

    id: str
    sweep_id: str
    state: AgentTrialState
    metrics: dict[str, float] = Field(default_factory=dict)  # last value of each key
    reason: str | None = None
    exit_code: int | None = None  # negative: killed by that signal number
    stderr_tail: str | None = None
    started_at: float  # unix seconds
    ended_at: float | None = None
    # Metrics lines the executor has read so far (the seq of the last one): a
    # daemon that logged fewer fetches the rest from the metrics route.
    metrics_seq: int = Field(default=0, ge=0, le=MAX_METRICS_SEQ)
    # The trial's run this is about (TrialSubmission.run; 1 from executors that
    # predate runs): metrics lines of one run are numbered apart from another's.
    run: int = Field(default=1, ge=1, le=MAX_TRIAL_RUNS)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class MetricsLine(BaseModel):
    """One line a trial reported: its numeric metrics, numbered from 1."""

    seq: int = Field(ge=1, le=MAX_METRICS_SEQ)
    metrics: dict[str, float]


class MetricsPage(BaseModel):
    """Answer of ``GET /v1/trials/{id}/metrics``: lines after a seq, in order."""

    trial_id: str
    lines: list[MetricsLine] = Field(max_length=MAX_METRICS_PAGE_LINES)
    last_seq: int = Field(ge=0, le=MAX_METRICS_SEQ)  # lines the executor has read so far
    # The trial's run this is about (TrialSubmission.run; 1 from executors that
    # predate runs): metrics lines of one run are numbered apart from another's.
    run: int = Field(default=1, ge=1, le=MAX_TRIAL_RUNS)


class TrialUpdate(BaseModel):
    """Body of a callback POST: metrics lines, or the terminal status.

    A ``metrics`` update carries its lines in ``lines`` (a batch, in order);
    ``seq`` and ``metrics`` alone (no ``lines``) are one line, as executors of
    protocol 1 before batching sent them.
    """

    kind: Literal["metrics", "status"]
    trial_id: str
    sweep_id: str
    seq: int = Field(ge=0, le=MAX_METRICS_SEQ)  # last metric line's seq; a status carries it too
    metrics: dict[str, float] = Field(default_factory=dict)
    status: TrialStatus | None = None
    lines: list[MetricsLine] = Field(default_factory=list, max_length=MAX_METRICS_PAGE_LINES)
    # The trial's run this is about (TrialSubmission.run; 1 from executors that
    # predate runs): metrics lines of one run are numbered apart from another's.
    run: int = Field(default=1, ge=1, le=MAX_TRIAL_RUNS)

    def metrics_lines(self) -> list[MetricsLine]:
        """The lines this update carries (the single-line form included)."""
        if self.lines or self.kind != "metrics" or self.seq < 1:
            return list(self.lines)
        return [MetricsLine(seq=self.seq, metrics=self.metrics)]

    @model_validator(mode="after")
    def _status_is_of_this_trial(self) -> TrialUpdate:
        # A status carried under another trial's (or sweep's) id would end that trial.
        if self.status is not None:
            if self.status.id != self.trial_id:
                raise ValueError(f"status.id {self.status.id!r} is not trial_id {self.trial_id!r}")
            if self.status.sweep_id != self.sweep_id:
                raise ValueError(
                    f"status.sweep_id {self.status.sweep_id!r} is not sweep_id {self.sweep_id!r}"
                )
            if self.status.run != self.run:
                raise ValueError(f"status.run {self.status.run} is not run {self.run}")
        return self


class CheckpointDeleted(BaseModel):
    """Answer of ``DELETE /v1/trials/{id}/checkpoint``."""

    trial_id: str
    freed_bytes: int = Field(ge=0)  # bytes of regular files removed


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    protocol: str = PROTOCOL_VERSION
    slots: int
    free_slots: int
    running: list[str]
    # GPU device ids the executor hands to trials, and those no running trial
    # holds (empty on hosts without GPUs and from executors that predate them).
    gpus: list[str] = Field(default_factory=list)
    free_gpus: list[str] = Field(default_factory=list)


__all__ = [
    "GPU_RESOURCE",
    "MAX_METRICS_PAGE_LINES",
    "MAX_METRICS_SEQ",
    "MAX_METRIC_KEYS",
    "MAX_METRIC_KEY_BYTES",
    "MAX_TIMEOUT_SECONDS",
    "MAX_TRIAL_GPUS",
    "MAX_TRIAL_ID_LENGTH",
    "PROTOCOL_VERSION",
    "TERMINAL_STATES",
    "TIMEOUT_REASON",
    "TRIAL_RESOURCE_NAMES",
    "AgentTrialState",
    "CheckpointDeleted",
    "Health",
    "MetricsLine",
    "MetricsPage",
    "ResourceValue",
    "TrialResources",
    "TrialStatus",
    "TrialSubmission",
    "TrialUpdate",
]
