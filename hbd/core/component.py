"""Polyaxon's component and operation pieces, as users write them.

A Polyaxon operation carries a ``component`` (``version``, ``kind: component``,
``name``, ``inputs``, ``outputs``, ``run: {kind: job, container: ...}``) and
operation-level ``params``. What has a meaning on a host is honoured; what is a
cluster concern is accepted and **warned about by name** (``CLUSTER_KEYS`` on
each model, listed by ``cluster_warnings``); anything else is an error. The
README's per-key table is the user-facing copy of these decisions.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from hbd.core.iotypes import cast_value
from hbd.core.params import Frozen, json_native
from hbd.core.templating import TEMPLATE, format_value

__all__ = [
    "IO_TYPES",
    "MAX_TIMEOUT_SECONDS",
    "RESOURCE_NAMES",
    "RUN_KINDS",
    "Component",
    "Container",
    "IOSpec",
    "JobRun",
    "OperationParam",
    "Resources",
    "Termination",
    "cluster_warnings",
]

# Polyaxon IO types; hbd acts on the scalar ones and keeps the rest as written.
IO_TYPES = frozenset(
    {
        "any",
        "int",
        "float",
        "str",
        "bool",
        "dict",
        "list",
        "date",
        "datetime",
        "uri",
        "auth",
        "path",
        "url",
        "file",
        "gcs",
        "s3",
        "wasb",
        "dockerfile",
        "git",
        "image",
        "event",
        "artifacts",
        "tensorboard",
        "metric",
        "metadata",
    }
)

# Polyaxon's run kinds; only `job` (one process) is what hbd runs per trial.
RUN_KINDS = (
    "job",
    "service",
    "dag",
    "daskjob",
    "rayjob",
    "sparkjob",
    "mpijob",
    "pytorchjob",
    "tfjob",
    "mxjob",
    "xgbjob",
    "paddlejob",
    "notifier",
    "tuner",
    "cleaner",
    "watchdog",
    "builder",
)

# Retries of one trial: each costs a whole trial run, and a configuration that
# fails this often is broken, not unlucky.
MAX_RETRIES = 10
# A year (the same bound as hbd.protocol.MAX_TIMEOUT_SECONDS, which the core
# cannot import): longer is not a timeout but a typo.
MAX_TIMEOUT_SECONDS = 366 * 24 * 3600.0

# Resource names kept in a trial's submission for executors to honour.
RESOURCE_NAMES = ("cpu", "memory", "nvidia.com/gpu")
# A Kubernetes quantity: 2, 0.5, 500m, 4Gi, 1e3.
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?([eE][0-9]+|m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
# GPUs are whole devices (as Kubernetes takes them), at most this many per trial:
# hbd.protocol.MAX_TRIAL_GPUS, which the core cannot import (it imports os).
GPU_RESOURCE = "nvidia.com/gpu"
MAX_TRIAL_GPUS = 64

_POD = "a Kubernetes pod setting"
_CLUSTER = "a Polyaxon cluster setting"
# Cluster settings an operation and a component both carry (hbd.core.spec adds
# the operation's own): accepted, kept and warned about by name.
SHARED_CLUSTER_KEYS = (
    "presets",
    "queue",
    "namespace",
    "cache",
    "plugins",
    "build",
    "hooks",
    "is_approved",
    "cost",
)
_IMAGE = "hbd runs the command on the host, not in an image"


class _Warned(Frozen):
    """A model whose ``CLUSTER_KEYS`` fields are accepted, kept and warned about."""

    CLUSTER_KEYS: ClassVar[dict[str, str]] = {}


def _field_alias(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    return info.alias or name


def cluster_warnings(model: BaseModel, path: str) -> Iterator[str]:
    """One line per cluster-only key set in ``model`` and the models inside it."""
    keys = getattr(model, "CLUSTER_KEYS", {})
    for name in type(model).model_fields:
        value = getattr(model, name)
        where = (
            f"{path}.{_field_alias(type(model), name)}" if path else _field_alias(type(model), name)
        )
        if name in keys and value is not None:
            yield f"{where}: not used on a host ({keys[name]}); ignored"
        elif isinstance(value, BaseModel):
            yield from cluster_warnings(value, where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from cluster_warnings(item, f"{where}[{i}]")


# ---------------------------------------------------------------- termination


class Termination(_Warned):
    """Polyaxon's ``termination``: ``maxRetries`` and ``timeout`` per trial run."""

    CLUSTER_KEYS: ClassVar[dict[str, str]] = {"ttl": "finished runs are not cleaned up by hbd"}
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES)
    timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_SECONDS)
    ttl: Any = None

    @field_validator("timeout", mode="before")
    @classmethod
    def _seconds(cls, v: object) -> object:
        if isinstance(v, bool) or (v is not None and not isinstance(v, (int, float))):
            raise ValueError(f"timeout is a number of seconds, got {v!r}")
        return v


# ---------------------------------------------------------------- inputs


class IOSpec(_Warned):
    CLUSTER_KEYS: ClassVar[dict[str, str]] = {
        "connection": "connections are cluster resources",
        "to_init": "init containers are Kubernetes",
        "delay_validation": "hbd validates every value at submission",
    }
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: str = "any"
    is_optional: bool = False
    is_list: bool = False
    is_flag: bool = False
    arg_format: str | None = None
    options: list[Any] | None = None
    to_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: Any = None
    description: str | None = None
    connection: Any = None
    to_init: Any = None
    delay_validation: Any = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in IO_TYPES:
            close = difflib.get_close_matches(v, sorted(IO_TYPES), n=1, cutoff=0.6)
            hint = (
                f"did you mean {close[0]!r}?" if close else "e.g. int, float, str, bool, dict, list"
            )
            raise ValueError(f"unknown input type {v[:40]!r}; {hint}")
        return v

    @field_validator("value", "options")
    @classmethod
    def _json_value(cls, v: object) -> Any:
        return json_native(v)

    @property
    def has_default(self) -> bool:
        return self.value is not None

    def cast(self, value: Any) -> Any:
        """``value`` as this input receives it (each item for ``isList``); ValueError if not."""
        if self.is_list and value is not None:
            if not isinstance(value, list):
                raise ValueError("not a list (the input has isList)")
            return [cast_value(x, self.type) for x in value]
        return cast_value(value, self.type)


class OperationParam(_Warned):
    """An operation-level param: ``{value: 5}`` (or the short form ``5``)."""

    CLUSTER_KEYS: ClassVar[dict[str, str]] = {
        "connection": "connections are cluster resources",
        "to_init": "init containers are Kubernetes",
    }
    value: Any = None
    ref: Any = None
    context_only: bool = False
    connection: Any = None
    to_init: Any = None
    to_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, v: object) -> object:
        # Polyaxon's full form is a mapping with `value`/`ref`; anything else is the value.
        keys = {"value", "ref", "contextOnly", "context_only", "connection", "toInit", "to_init"}
        if isinstance(v, Mapping) and (set(v) & keys or not v):
            return v
        return {"value": v}

    @field_validator("value")
    @classmethod
    def _json_value(cls, v: object) -> Any:
        return json_native(v)

    @field_validator("ref")
    @classmethod
    def _no_ref(cls, v: object) -> None:
        if v is not None:
            raise ValueError(
                "`ref` reads another run's outputs (Polyaxon DAGs/runs); hbd has none: give `value`"
            )


# ---------------------------------------------------------------- container


def split_command(v: object) -> object:
    """A string command split like a shell would (no shell runs); lists pass through.

    ``{{ ... }}`` templates stay whole even with spaces inside the braces.
    """
    if not isinstance(v, str):
        return v
    found: list[str] = []

    def hide(m: re.Match[str]) -> str:
        found.append(m[0])
        return f"\0{len(found) - 1}\0"

    if "\0" in v:
        raise ValueError("contains a NUL character")
    hidden = TEMPLATE.sub(hide, v)
    try:
        parts = shlex.split(hidden)
    except ValueError as exc:
        raise ValueError(f"cannot split like a shell: {exc}") from None
    return [re.sub(r"\0(\d+)\0", lambda m: found[int(m[1])], p) for p in parts]


class Resources(_Warned):
    """``limits``/``requests`` of cpu, memory, nvidia.com/gpu (Kubernetes quantities)."""

    CLUSTER_KEYS: ClassVar[dict[str, str]] = {"claims": "dynamic resource claims are Kubernetes"}
    limits: dict[str, str] = Field(default_factory=dict)
    requests: dict[str, str] = Field(default_factory=dict)
    claims: Any = None

    @field_validator("limits", "requests", mode="before")
    @classmethod
    def _quantities(cls, v: object) -> object:
        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise ValueError(
                f"must be a mapping of resource name to quantity, got {type(v).__name__}"
            )
        out = {}
        for name, q in v.items():
            if isinstance(q, bool) or not isinstance(q, (str, int, float)):
                raise ValueError(f"{name}: a quantity like 2, 500m or 4Gi, got {q!r}")
            text = format_value(q)
            if not _QUANTITY.match(text):
                raise ValueError(f"{name}: {text!r} is not a quantity like 2, 500m or 4Gi")
            if name == GPU_RESOURCE and not (text.isdigit() and int(text) <= MAX_TRIAL_GPUS):
                # Said here, at `hbd validate`, not when the first trial is submitted.
                raise ValueError(
                    f"{name}: {text!r} is not a whole number of GPU devices (0..{MAX_TRIAL_GPUS})"
                )
            out[str(name)] = text
        return out

    def unused(self) -> list[str]:
        """Resource names executors are not told about."""
        names = [*self.limits, *self.requests]
        return sorted({n for n in names if n not in RESOURCE_NAMES})


class Container(_Warned):
    CLUSTER_KEYS: ClassVar[dict[str, str]] = {
        "name": "Kubernetes container name",
        "image": _IMAGE,
        "image_pull_policy": _IMAGE,
        "ports": _POD,
        "volume_mounts": _POD,
        "volume_devices": _POD,
        "security_context": _POD,
        "liveness_probe": _POD,
        "readiness_probe": _POD,
        "startup_probe": _POD,
        "lifecycle": _POD,
        "env_from": "Kubernetes secrets/config maps",
        "stdin": _POD,
        "stdin_once": _POD,
        "tty": _POD,
        "termination_message_path": _POD,
        "termination_message_policy": _POD,
        "resize_policy": _POD,
        "restart_policy": _POD,
    }
    command: list[str] = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None
    resources: Resources | None = None
    name: Any = None
    image: Any = None
    image_pull_policy: Any = None
    ports: Any = None
    volume_mounts: Any = None
    volume_devices: Any = None
    security_context: Any = None
    liveness_probe: Any = None
    readiness_probe: Any = None
    startup_probe: Any = None
    lifecycle: Any = None
    env_from: Any = None
    stdin: Any = None
    stdin_once: Any = None
    tty: Any = None
    termination_message_path: Any = None
    termination_message_policy: Any = None
    resize_policy: Any = None
    restart_policy: Any = None

    @field_validator("command", "args", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return split_command(v)

    @field_validator("command")
    @classmethod
    def _program(cls, v: list[str]) -> list[str]:
        # An empty program fails every trial run at exec, far from the spec that said it.
        if not v[0].strip():
            raise ValueError("the first element (the program to run) must not be empty")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: object) -> object:
        if v is None:
            return {}
        if isinstance(v, Mapping):
            items = list(v.items())
        elif isinstance(v, list):
            items = []
            for i, entry in enumerate(v):
                if not isinstance(entry, Mapping) or "name" not in entry:
                    raise ValueError(f"item {i} must be {{name: ..., value: ...}}")
                if "valueFrom" in entry or "value_from" in entry:
                    raise ValueError(
                        f"{entry['name']}: valueFrom reads Kubernetes secrets; not on a host: give `value`"
                    )
                extra = set(entry) - {"name", "value"}
                if extra:
                    raise ValueError(f"item {i}: unknown key `{sorted(extra)[0]}`")
                items.append((entry["name"], entry.get("value", "")))
        else:
            raise ValueError(
                f"must be a list of {{name, value}} or a mapping, got {type(v).__name__}"
            )
        out: dict[str, str] = {}
        for name, value in items:
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
                raise ValueError(f"invalid environment variable name {name!r}")
            if isinstance(value, (dict, list)) or value is None:
                value = "" if value is None else format_value(value)
            out[name] = value if isinstance(value, str) else format_value(value)
        return out


class JobRun(_Warned):
    """``run: {kind: job, container: ...}``: one process per trial."""

    CLUSTER_KEYS: ClassVar[dict[str, str]] = {
        "environment": _POD,
        "connections": "connections are cluster resources",
        "volumes": _POD,
        "init": "init containers are Kubernetes",
        "sidecars": "sidecar containers are Kubernetes",
    }
    kind: Literal["job"]
    container: Container
    environment: Any = None
    connections: Any = None
    volumes: Any = None
    init: Any = None
    sidecars: Any = None

    @field_validator("kind", mode="before")
    @classmethod
    def _job_only(cls, v: object) -> object:
        if v != "job" and v in RUN_KINDS:
            raise ValueError(
                f"run kind `{v}` is not supported: hbd runs each trial as one process (`kind: job`)"
            )
        if v != "job":
            raise ValueError(f"unknown run kind {v!r}; hbd runs `kind: job`")
        return v


class Component(_Warned):
    CLUSTER_KEYS: ClassVar[dict[str, str]] = {
        name: _CLUSTER for name in (*SHARED_CLUSTER_KEYS, "template")
    }
    version: float | None = None
    kind: Literal["component"] | None = None
    name: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    inputs: list[IOSpec] = Field(default_factory=list)
    outputs: list[IOSpec] = Field(default_factory=list)
    run: JobRun
    termination: Termination | None = None
    presets: Any = None
    queue: Any = None
    namespace: Any = None
    cache: Any = None
    plugins: Any = None
    build: Any = None
    hooks: Any = None
    is_approved: Any = None
    cost: Any = None
    template: Any = None

    @model_validator(mode="before")
    @classmethod
    def _container_shorthand(cls, v: object) -> object:
        # hbd's shorthand `component.container` is `run: {kind: job, container}`.
        if isinstance(v, Mapping) and "container" in v:
            if "run" in v:
                raise ValueError("give `run: {kind: job, container: ...}` or `container`, not both")
            data = {k: x for k, x in v.items() if k != "container"}
            data["run"] = {"kind": "job", "container": v["container"]}
            return data
        return v

    @property
    def container(self) -> Container:
        return self.run.container
