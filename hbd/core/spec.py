"""The sweep spec: Polyaxon's ``matrix: kind: hyperband`` operation, validated eagerly.

Polyaxon validates lazily (a bad eta or a missing metric surfaces when the
tuner runs, see polyaxon-semantics.md §5). hbd checks everything at
submission and reports every problem at once: ``load_spec``/``parse_spec``
raise one ``SpecError`` whose problems each name a dotted path and a reason,
and never let a pydantic or YAML exception escape.

Checks come in two layers:

1. the schema (pydantic models here and in ``params``): types, ranges,
   unknown keys, per-kind rules;
2. cross-field checks against the component (params vs inputs, resource,
   required inputs, ``{{ name }}`` placeholders), run on the raw data piece
   by piece so that they still report on the parts that did parse.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, TypeAdapter, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from hbd.core.errors import SpecError, SpecProblem
from hbd.core.limits import (
    DEFAULT_SPEC_LIMITS,
    MAX_CONCURRENCY,
    MAX_NAME_CHARS,
    MAX_SQL_INT,
    MIN_SQL_INT,
    SpecLimits,
    nul_problems,
    trial_runs_problem,
)
from hbd.core.loader import SpecTooLarge, load_yaml
from hbd.core.params import (
    NUMERIC_KINDS,
    PARAM_KINDS,
    Frozen,
    LogUniformParam,
    Number,
    Param,
    QLogUniformParam,
    json_native,
)

__all__ = [
    "MAX_SWEEP_ID_LENGTH",
    "PLACEHOLDER",
    "SWEEP_ID_PATTERN",
    "Component",
    "Container",
    "FailureEarlyStopping",
    "HyperbandMatrix",
    "IOSpec",
    "Metric",
    "MetricEarlyStopping",
    "Param",
    "Resource",
    "SweepSpec",
    "Tuner",
    "load_spec",
    "parse_spec",
    "placeholders",
    "spec_warnings",
    "sweep_id_problem",
]

# `{{ name }}` with any whitespace inside the braces. The executor substitutes
# exactly these, one argv element at a time, so it must share this regex.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# Anything else in double braces (Polyaxon's `{{ params.lr.as_arg }}`,
# `{{ globals.run_uuid }}`) would be passed through literally; reject it.
_ANY_TEMPLATE = re.compile(r"\{\{(.*?)\}\}")

# A sweep id chosen by the user (`hbd submit --id`, `POST /v1/sweeps?id=`).
# Trial ids are built from it (`{sweep}-s{bracket}-r{rung}-c{index}`, see
# hbd.core.sweep.trial_id) and must match the executor protocol's
# `^[A-Za-z0-9._-]+$` of at most 200 characters; they also name directories
# on executors. 64 leaves the suffix over 100 characters of room and keeps
# ids readable in tables and log lines. ASCII only: `str.isalnum` would let
# any Unicode letter through.
MAX_SWEEP_ID_LENGTH = 64
SWEEP_ID_PATTERN = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_SWEEP_ID_LENGTH}}}$")

# Polyaxon IO types; hbd only acts on the scalar ones but accepts the rest.
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

NO_TUNER = "tuners are not pluggable yet; hbd uses its built-in random sampling; remove `tuner`"
NO_POLICY = "early-stopping policies are not supported; only threshold conditions"


def sweep_id_problem(sweep_id: str) -> str | None:
    """Why ``sweep_id`` cannot be a sweep id, or None if it can."""
    if SWEEP_ID_PATTERN.fullmatch(sweep_id):
        return None
    shown = sweep_id if len(sweep_id) <= 80 else sweep_id[:77] + "..."
    return (
        f"invalid sweep id {shown!r}: use 1 to {MAX_SWEEP_ID_LENGTH} ASCII letters, "
        "digits, '-' or '_'"
    )


def placeholders(template: str) -> list[str]:
    """Names of the ``{{ name }}`` placeholders in ``template``, in order."""
    return PLACEHOLDER.findall(template)


# ---------------------------------------------------------------- models


class Resource(Frozen):
    name: str = Field(min_length=1)
    type: Literal["int", "float"]


class Metric(Frozen):
    name: str = Field(min_length=1)
    optimization: Literal["minimize", "maximize"] = "minimize"


class Tuner(Frozen):
    hub_ref: str
    params: dict[str, Any] | None = None
    queue: str | None = None
    namespace: str | None = None
    presets: list[str] | None = None


class MetricEarlyStopping(Frozen):
    kind: Literal["metric_early_stopping"]
    metric: str
    value: Number
    optimization: Literal["minimize", "maximize"] = "minimize"
    policy: Any = None

    @field_validator("policy")
    @classmethod
    def _no_policy(cls, v: object) -> None:
        if v is not None:
            raise ValueError(NO_POLICY)


class FailureEarlyStopping(Frozen):
    kind: Literal["failure_early_stopping"]
    percent: float = Field(gt=0, le=100)


EarlyStopping = Annotated[MetricEarlyStopping | FailureEarlyStopping, Field(discriminator="kind")]


class HyperbandMatrix(Frozen):
    kind: Literal["hyperband"]
    params: dict[str, Param]
    max_iterations: int = Field(ge=1, le=MAX_SQL_INT)  # resources are stored as SQL integers
    eta: Number = 3
    resource: Resource
    metric: Metric
    resume: bool = False
    seed: int | None = Field(default=None, ge=MIN_SQL_INT, le=MAX_SQL_INT)  # stored in SQL
    concurrency: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY)
    tuner: Tuner | None = None
    early_stopping: list[EarlyStopping] = Field(default_factory=list)

    @field_validator("params")
    @classmethod
    def _some_params(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            raise ValueError("at least one param is required")
        return v

    @field_validator("eta")
    @classmethod
    def _eta(cls, v: float) -> int | float:
        # eta 1 divides by log(1) = 0 and eta 0 takes log(0) in Polyaxon.
        if v < 2:
            raise ValueError(f"eta must be >= 2, got {v!r}")
        return v

    @field_validator("tuner", mode="before")
    @classmethod
    def _no_tuner(cls, v: object) -> None:
        if v is not None:
            raise ValueError(NO_TUNER)


class IOSpec(Frozen):
    name: str
    type: str
    is_optional: bool = False
    value: Any = None
    description: str | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in IO_TYPES:
            raise ValueError(
                f"unknown input type {v!r}; expected one of {', '.join(sorted(IO_TYPES))}"
            )
        return v

    @field_validator("value")
    @classmethod
    def _json_value(cls, v: object) -> Any:
        return json_native(v)

    @property
    def has_default(self) -> bool:
        return self.value is not None


class Container(Frozen):
    image: str | None = None
    command: list[str] = Field(min_length=1)
    args: list[str] = Field(default_factory=list)

    @field_validator("command")
    @classmethod
    def _program(cls, v: list[str]) -> list[str]:
        if not v[0].strip():
            raise ValueError("the first element (the program to run) must not be empty")
        return v


class Component(Frozen):
    inputs: list[IOSpec] = Field(default_factory=list)
    outputs: list[IOSpec] = Field(default_factory=list)
    container: Container


# Retries of one trial: each costs a whole trial run, and a configuration that
# fails this often is broken, not unlucky.
MAX_RETRIES = 10


class Termination(Frozen):
    """Polyaxon's ``termination``; hbd honours ``maxRetries`` (per trial run)."""

    max_retries: int = Field(default=0, ge=0, le=MAX_RETRIES)
    # Parsed so that a Polyaxon spec gets a reason, not "unknown key".
    timeout: Any = None
    ttl: Any = None

    @field_validator("timeout", "ttl")
    @classmethod
    def _not_enforced(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("hbd does not enforce trial timeouts or ttl yet; remove it")
        return value


class SweepSpec(Frozen):
    version: float | None = None
    kind: Literal["operation"] | None = None
    name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    description: str | None = None
    tags: list[str] | None = None
    termination: Termination | None = None
    matrix: HyperbandMatrix
    component: Component

    @property
    def max_retries(self) -> int:
        """How often a failed trial run is started again (same config, rung, resource)."""
        return self.termination.max_retries if self.termination else 0

    def to_json(self) -> dict[str, Any]:
        """Canonical JSON data (camelCase keys) that ``parse_spec`` reads back equal."""
        return self.model_dump(mode="json", by_alias=True)


# ---------------------------------------------------------------- entry points


def load_spec(text: str, *, limits: SpecLimits = DEFAULT_SPEC_LIMITS) -> SweepSpec:
    """Parse YAML (or JSON, a YAML subset) text into a spec; raise ``SpecError``.

    The text is parsed within ``limits`` (size, depth, aliases: see
    ``hbd.core.loader``) and the plan may not exceed ``limits.max_trial_runs``.
    """
    if not isinstance(text, str):
        raise SpecError([SpecProblem("", f"spec text must be a string, got {type(text).__name__}")])
    try:
        data = load_yaml(text, limits)
    except SpecTooLarge as exc:
        raise SpecError([SpecProblem("", str(exc))]) from None
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_problem(exc, text)]) from None
    problems = nul_problems(data)
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        raise SpecError(problems + exc.problems) from None
    m = spec.matrix
    too_many = trial_runs_problem(m.max_iterations, m.eta, limits.max_trial_runs)
    if problems or too_many:
        raise SpecError(problems + ([too_many] if too_many else []))
    return spec


def parse_spec(data: object) -> SweepSpec:
    """Validate already-parsed data; raise ``SpecError`` listing every problem."""
    if data is None:
        raise SpecError([SpecProblem("", "the spec is empty")])
    if not isinstance(data, Mapping):
        raise SpecError(
            [
                SpecProblem(
                    "", f"the spec must be a mapping of keys to values, got {type(data).__name__}"
                )
            ]
        )
    problems: list[SpecProblem] = []
    spec: SweepSpec | None = None
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems(exc, data))
    except (
        ValueError,
        TypeError,
        ArithmeticError,
    ) as exc:  # pragma: no cover - a bug in a validator
        problems.append(SpecProblem("", f"invalid spec: {exc}"))
    problems.extend(_cross_check(data))
    if problems or spec is None:
        raise SpecError(problems or [SpecProblem("", "invalid spec")])
    return spec


def spec_warnings(spec: SweepSpec) -> list[str]:
    """Things that are valid but probably not what was meant (shown by ``hbd plan``)."""
    out: list[str] = []
    for name, p in spec.matrix.params.items():
        if isinstance(p, (LogUniformParam, QLogUniformParam)):
            low, high = p.value.low, p.value.high
            if 0 < low and high <= 1:
                out.append(
                    f"matrix.params.{name}: {p.kind} bounds are natural-log exponents; "
                    f"[{low:g}, {high:g}] gives values in [{math.exp(low):.5g}, {math.exp(high):.5g}]. "
                    f"Did you mean [{math.log(low):.2f}, {math.log(high):.2f}] "
                    f"(= ln {low:g}, ln {high:g})?"
                )
    return out


# ---------------------------------------------------------------- errors


def _yaml_problem(exc: yaml.YAMLError, text: str) -> SpecProblem:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return SpecProblem("", f"YAML syntax error: {problem}")
    lines = text.splitlines()
    near = lines[mark.line].strip() if 0 <= mark.line < len(lines) else ""
    hint = " (check the indentation of this line)" if "block" in problem else ""
    return SpecProblem(
        "",
        f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {problem}"
        + (f", near `{near}`" if near else "")
        + hint,
    )


def _path(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _problems(
    exc: ValidationError, raw: object, prefix: tuple[str | int, ...] = ()
) -> list[SpecProblem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = (*prefix, *err["loc"])
        parts, parent = _clean_loc(raw, loc)
        problems.append(SpecProblem(_path(parts), _reason(err, parts, parent)))
    return problems


def _clean_loc(raw: object, loc: tuple[str | int, ...]) -> tuple[list[str | int], object]:
    """Follow ``loc`` through the raw data, dropping pydantic's synthetic steps.

    A discriminated union inserts its tag (``lr.uniform.value``); the raw data
    has no such key, so steps that match neither a key nor an index but equal
    the current mapping's ``kind`` are dropped. Returns the path and the
    mapping that holds its last step.
    """
    parts: list[str | int] = []
    cur: object = raw
    parent: object = None
    for step in loc:
        if isinstance(cur, Mapping) and step in cur:
            parent, cur = cur, cur[step]
        elif isinstance(cur, list) and isinstance(step, int) and 0 <= step < len(cur):
            parent, cur = cur, cur[step]
        elif isinstance(cur, Mapping) and cur.get("kind") == step:
            continue
        else:
            parent, cur = cur, None
        parts.append(step)
    return parts, parent


def _expected_kinds(parts: list[str | int]) -> list[str]:
    # pydantic names the tags only for an invalid tag, not for a missing one.
    if any(p in ("early_stopping", "earlyStopping") for p in parts):
        return ["metric_early_stopping", "failure_early_stopping"]
    if "params" in parts:
        return sorted(PARAM_KINDS)
    return []


def _reason(err: Any, parts: list[str | int], parent: object) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        key = parts[-1] if parts else ""
        if (
            isinstance(key, str)
            and isinstance(parent, Mapping)
            and to_camel(key) != key
            and to_camel(key) in parent
        ):
            return f"given as both `{to_camel(key)}` and `{key}`; use one"
        return f"unknown key `{key}`"
    if kind == "union_tag_not_found":
        return f"missing `kind`; expected one of: {', '.join(_expected_kinds(parts))}"
    if kind == "union_tag_invalid":
        return f"unknown kind {ctx.get('tag')!r}; expected one of: {ctx.get('expected_tags', '')}"
    msg = str(err["msg"])
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    text = msg[:1].lower() + msg[1:]
    if (
        kind not in ("missing",)
        and "input" in err
        and not isinstance(err["input"], (Mapping, list))
    ):
        text += f" (got {err['input']!r})"
    return text


# ---------------------------------------------------------------- cross-field checks


def _try(adapter: TypeAdapter[Any], v: object) -> Any:
    try:
        return adapter.validate_python(v)
    except ValidationError:
        return None  # already reported by the schema pass


_PARAM = TypeAdapter(Param)
_IO = TypeAdapter(IOSpec)
_RESOURCE = TypeAdapter(Resource)
_STRS = TypeAdapter(list[str])


def _mapping(v: object) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _cross_check(data: Mapping[str, Any]) -> list[SpecProblem]:
    matrix = _mapping(data.get("matrix"))
    component = _mapping(data.get("component"))
    raw_params = _mapping(matrix.get("params"))
    raw_inputs = component.get("inputs")
    if not isinstance(raw_inputs, list):
        # Without a readable input list every cross check would be noise.
        return []

    inputs: dict[str, tuple[int, IOSpec]] = {}
    unreadable: set[str] = set()  # inputs whose name we know but that did not parse
    problems: list[SpecProblem] = []
    for i, raw in enumerate(raw_inputs):
        io = _try(_IO, raw)
        if io is None:
            name = _mapping(raw).get("name")
            if isinstance(name, str):
                unreadable.add(name)
            continue
        if io.name in inputs:
            problems.append(
                SpecProblem(f"component.inputs[{i}]", f"duplicate input name `{io.name}`")
            )
            continue
        inputs[io.name] = (i, io)

    def input_type(name: str) -> str | None:
        return inputs[name][1].type if name in inputs else None

    for name, raw in raw_params.items():
        loc = f"matrix.params.{name}"
        if name in unreadable:
            continue
        if name not in inputs:
            problems.append(SpecProblem(loc, f"no component input named `{name}`"))
            continue
        param = _try(_PARAM, raw)
        if param is None:
            continue
        want = _wanted_type(param.kind)
        got = input_type(name)
        if want is not None and got not in want:
            problems.append(
                SpecProblem(
                    loc,
                    f"{param.kind} gives {' or '.join(want)} values but input `{name}` has type {got}",
                )
            )
        elif got == "int" and _makes_fractions(param):
            problems.append(
                SpecProblem(
                    loc, f"{param.kind} gives non-integer values but input `{name}` has type int"
                )
            )

    resource = _try(_RESOURCE, matrix.get("resource"))
    resource_name = resource.name if resource is not None else None
    if resource is not None and resource.name not in unreadable:
        if resource.name not in inputs:
            problems.append(
                SpecProblem("matrix.resource.name", f"no component input named `{resource.name}`")
            )
        else:
            got = input_type(resource.name)
            if got not in ("int", "float"):
                problems.append(
                    SpecProblem(
                        "matrix.resource.name",
                        f"input `{resource.name}` has type {got}; a resource needs int or float",
                    )
                )
            elif got == "int" and resource.type == "float":
                problems.append(
                    SpecProblem(
                        "matrix.resource.type",
                        f"a float resource would pass fractional values to int input `{resource.name}`; use type: int",
                    )
                )
        if resource.name in raw_params:
            problems.append(
                SpecProblem(
                    f"matrix.params.{resource.name}",
                    "is the resource; Hyperband sets it, so it cannot also be a param",
                )
            )

    if resource_name is None:
        raw_name = _mapping(matrix.get("resource")).get("name")
        resource_name = raw_name if isinstance(raw_name, str) else None
    supplied = set(raw_params) | ({resource_name} if resource_name else set())
    # With no readable resource or params, any uncovered input may be one they
    # meant; that absence is already reported, so coverage says no more.
    coverage_known = resource_name is not None and bool(raw_params)
    for name, (i, io) in inputs.items():
        if not coverage_known:
            break
        if not io.is_optional and not io.has_default and name not in supplied:
            problems.append(
                SpecProblem(
                    f"component.inputs[{i}]",
                    f"required input `{name}` is not set by any param or by the resource",
                )
            )

    container = _mapping(component.get("container"))
    for field in ("command", "args"):
        items = _try(_STRS, container.get(field))
        for j, item in enumerate(items or []):
            loc = f"component.container.{field}[{j}]"
            for expr in _ANY_TEMPLATE.findall(item):
                name = expr.strip()
                if not PLACEHOLDER.fullmatch("{{" + expr + "}}"):
                    problems.append(
                        SpecProblem(
                            loc,
                            f"unsupported template `{{{{{expr}}}}}`; only `{{{{ name }}}}` of an input is substituted",
                        )
                    )
                elif name in unreadable:
                    continue
                elif name not in inputs:
                    problems.append(
                        SpecProblem(loc, f"`{{{{ {name} }}}}` names no component input")
                    )
                elif (
                    coverage_known
                    and name not in supplied
                    and not inputs[name][1].has_default
                    and inputs[name][1].is_optional
                ):
                    # (a required input without a value is reported above)
                    problems.append(
                        SpecProblem(
                            loc,
                            f"`{{{{ {name} }}}}` has no value: input `{name}` is not a param or the resource and has no default",
                        )
                    )
    return problems


def _wanted_type(kind: str) -> tuple[str, ...] | None:
    if kind in NUMERIC_KINDS:
        return ("int", "float")
    if kind == "daterange":
        return ("date",)
    if kind == "datetimerange":
        return ("datetime",)
    return None  # choice / pchoice fit any input type


def _makes_fractions(param: Any) -> bool:
    """Would this param hand an int input a non-integer (which Polyaxon's child rejects)?"""
    v = param.value
    if param.kind in ("uniform", "loguniform", "normal", "lognormal"):
        return True
    if param.kind in ("quniform", "qloguniform", "qnormal", "qlognormal"):
        return not float(v.q).is_integer()
    if param.kind == "range":
        return not all(float(x).is_integer() for x in (v.start, v.step))
    return False
