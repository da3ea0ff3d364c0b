"""The sweep spec: a whole Polyaxon operation with ``matrix: kind: hyperband``, validated eagerly.

The operation is read as Polyaxon users write it (``hbd.core.component``: the
component with ``run: kind: job``, operation ``params``, ``termination``,
cluster-only keys kept and warned about); ``pathRef`` is inlined by the CLI
before this module sees the data (``hbd.specfile``), since the core does no I/O.

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

import difflib
import functools
import math
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from hbd.core.component import (
    SHARED_CLUSTER_KEYS,
    Component,
    Container,
    IOSpec,
    OperationParam,
    Termination,
    cluster_warnings,
    split_command,
)
from hbd.core.errors import SpecError, SpecProblem
from hbd.core.limits import (
    DEFAULT_SPEC_LIMITS,
    MAX_CONCURRENCY,
    MAX_HYPERBAND_ITERATIONS,
    MAX_NAME_CHARS,
    MAX_SQL_INT,
    MAX_STRAGGLERS,
    MIN_SQL_INT,
    SpecLimits,
    nul_problems,
    trial_runs_problem,
)
from hbd.core.loader import SpecTooLarge, load_yaml
from hbd.core.params import (
    KIND_FAMILIES,
    NUMERIC_KINDS,
    PARAM_KINDS,
    PCHOICE_TOLERANCE,
    Frozen,
    Number,
    ParamOfKind,
    kind_model,
)
from hbd.core.templating import EXECUTOR_GLOBALS, TemplateError, expressions, format_value

if TYPE_CHECKING:
    from hbd.core.params import Param
    from hbd.core.tunerparams import BOHBParams

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
    "OperationParam",
    "Param",
    "Resource",
    "SweepSpec",
    "Termination",
    "Tuner",
    "load_data",
    "load_spec",
    "parse_spec",
    "placeholders",
    "spec_from_data",
    "spec_warnings",
    "sweep_id_problem",
]

# `{{ name }}`: the simplest template (the executor protocol's placeholder).
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

# A sweep id chosen by the user (`hbd submit --id`, `POST /v1/sweeps?id=`).
# Trial ids are built from it (`{sweep}-s{bracket}-r{rung}-c{index}`, see
# hbd.core.sweep.trial_id) and must match the executor protocol's
# `^[A-Za-z0-9._-]+$` of at most 200 characters; they also name directories
# on executors. 64 leaves the suffix over 100 characters of room and keeps
# ids readable in tables and log lines. ASCII only: `str.isalnum` would let
# any Unicode letter through.
MAX_SWEEP_ID_LENGTH = 64
SWEEP_ID_PATTERN = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_SWEEP_ID_LENGTH}}}$")

# The samplers `matrix.tuner.hubRef` names (hbd.core.search builds them).
TUNERS = ("random", "bohb")
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


def _bohb_params_model() -> type[BOHBParams]:
    # hbd.core.tpe is the model-based sampler: a spec that sets no tuner.params
    # is read without importing it (nor every parameter kind it imports).
    from hbd.core.tunerparams import BOHBParams

    return BOHBParams


def _bohb_params(v: object) -> BOHBParams | None:
    """``matrix.tuner.params``, validated by ``BOHBParams`` (its errors keep their locations)."""
    return None if v is None else _bohb_params_model().model_validate(v)


if TYPE_CHECKING:
    TunerParams = BOHBParams | None
else:
    TunerParams = Annotated[Any, PlainValidator(_bohb_params)]


class Tuner(Frozen):
    """Polyaxon's ``matrix.tuner``: ``hubRef`` names the sampler (``random``, the
    default, or ``bohb``); ``params`` are the sampler's settings, validated
    (``BOHBParams``; random takes none)."""

    hub_ref: str
    params: TunerParams = None
    queue: str | None = None
    namespace: str | None = None
    presets: list[str] | None = None

    @field_validator("hub_ref")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in TUNERS:
            raise ValueError(
                f"unknown tuner {v!r}: hbd has {' and '.join(TUNERS)} (random is the default)"
            )
        return v

    @model_validator(mode="before")
    @classmethod
    def _params_for_bohb(cls, data: object) -> object:
        # Before the fields: a bad bohb setting's error would hide this one, the
        # real mistake, until it was fixed.
        if (
            isinstance(data, dict)
            and data.get("hubRef") == "random"
            and data.get("params") is not None
        ):
            raise ValueError("the random tuner takes no params; remove tuner.params")
        return data


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
    params: dict[str, ParamOfKind]
    max_iterations: int = Field(ge=1, le=MAX_SQL_INT)  # resources are stored as SQL integers
    eta: Number = 3
    resource: Resource
    metric: Metric
    resume: bool = False
    seed: int | None = Field(default=None, ge=MIN_SQL_INT, le=MAX_SQL_INT)  # stored in SQL
    concurrency: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY)
    tuner: Tuner | None = None
    # synchronous: a rung barrier per bracket (order-independent promotions);
    # asynchronous: ASHA's rule, promotions as results arrive (hbd.core.scheduler).
    promotion: Literal["synchronous", "asynchronous"] = "synchronous"
    # asynchronous: a rung's last promotions leave at most this many running
    # trials behind, counted as the worst (0: ASHA's rule; docs/search.md).
    stragglers: int = Field(default=0, ge=0, le=MAX_STRAGGLERS, strict=True)
    # Hyperband iterations (Li et al.'s outer loop): the plan runs this often.
    iterations: int = Field(default=1, ge=1, le=MAX_HYPERBAND_ITERATIONS)
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

    @model_validator(mode="after")
    def _stragglers_need_asynchronous(self) -> HyperbandMatrix:
        # A rung barrier waits for every trial by definition: say so, not ignore it.
        if self.stragglers and self.promotion != "asynchronous":
            raise ValueError("stragglers needs promotion: asynchronous")
        return self


OPERATION_CLUSTER_KEYS = {
    name: "a Polyaxon cluster setting"
    for name in (
        *SHARED_CLUSTER_KEYS,
        "run_patch",
        "patch_strategy",
        "is_preset",
        "schedule",
        "events",
        "joins",
        "dependencies",
        "trigger",
        "conditions",
        "skip_on_upstream_skip",
    )
}

# Polyaxon's ways to name a component elsewhere. pathRef is read by the CLI
# (hbd.specfile), relative to the spec's folder; the core and the API see
# only the inlined component.
REFS = {
    "pathRef": "pathRef is read by hbd validate/submit/run from the spec's folder; "
    "over the API, inline the component",
    "hubRef": "hubRef needs Polyaxon's component hub; save the component and use pathRef",
    "urlRef": "urlRef needs the network at submission; save the component and use pathRef",
    "dagRef": "dagRef names a DAG component; hbd runs one job per trial: inline it or use pathRef",
}
_REF_ALIASES = {
    "path_ref": "pathRef",
    "hub_ref": "hubRef",
    "url_ref": "urlRef",
    "dag_ref": "dagRef",
}


class SweepSpec(Frozen):
    CLUSTER_KEYS: ClassVar[dict[str, str]] = OPERATION_CLUSTER_KEYS
    version: float | None = None
    kind: Literal["operation"] | None = None
    name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    description: str | None = None
    tags: list[str] | None = None
    termination: Termination | None = None
    params: dict[str, OperationParam] = Field(default_factory=dict)
    matrix: HyperbandMatrix
    component: Component
    presets: Any = None
    queue: Any = None
    namespace: Any = None
    cache: Any = None
    plugins: Any = None
    build: Any = None
    hooks: Any = None
    run_patch: Any = None
    patch_strategy: Any = None
    is_preset: Any = None
    is_approved: Any = None
    cost: Any = None
    schedule: Any = None
    events: Any = None
    joins: Any = None
    dependencies: Any = None
    trigger: Any = None
    conditions: Any = None
    skip_on_upstream_skip: Any = None

    def _termination(self, field: str) -> Any:
        # The operation's termination overrides its component's, key by key (as in Polyaxon).
        for t in (self.termination, self.component.termination):
            if t is not None and getattr(t, field) is not None:
                return getattr(t, field)
        return None

    @property
    def max_retries(self) -> int:
        """How often a failed trial run is started again (same config, rung, resource)."""
        return int(self._termination("max_retries") or 0)

    @property
    def timeout_seconds(self) -> float | None:
        """``termination.timeout``: a trial run taking longer is stopped and failed."""
        t = self._termination("timeout")
        return None if t is None else float(t)

    @property
    def inputs(self) -> dict[str, IOSpec]:
        return {i.name: i for i in self.component.inputs}

    @property
    def input_types(self) -> dict[str, str]:
        return {i.name: i.type for i in self.component.inputs}

    def fixed_params(self) -> dict[str, Any]:
        """Input defaults, then operation params, each cast to its input's type."""
        inputs = self.inputs
        out: dict[str, Any] = {i.name: i.value for i in inputs.values() if i.has_default}
        for name, p in self.params.items():
            out[name] = inputs[name].cast(p.value) if name in inputs else p.value
        return out

    def cast_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A sampled configuration as the inputs receive it (``3.0`` on an int input is 3)."""
        inputs = self.inputs
        return {k: inputs[k].cast(v) if k in inputs else v for k, v in config.items()}

    def to_json(self) -> dict[str, Any]:
        """Canonical JSON data (camelCase keys) that ``parse_spec`` reads back equal."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# ---------------------------------------------------------------- entry points


def load_spec(text: str, *, limits: SpecLimits = DEFAULT_SPEC_LIMITS) -> SweepSpec:
    """Parse YAML (or JSON, a YAML subset) text into a spec; raise ``SpecError``.

    The text is parsed within ``limits`` (size, depth, aliases: see
    ``hbd.core.loader``) and the plan may not exceed ``limits.max_trial_runs``.
    """
    return spec_from_data(load_data(text, limits), limits=limits)


def spec_from_data(data: object, *, limits: SpecLimits = DEFAULT_SPEC_LIMITS) -> SweepSpec:
    """``load_spec`` after parsing: ``data`` is what ``load_data(text, limits)`` returned
    (so that a caller that has parsed the text already does not parse it again)."""
    problems = nul_problems(data)
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        raise SpecError(problems + exc.problems) from None
    m = spec.matrix
    too_many = trial_runs_problem(m.max_iterations, m.eta, limits.max_trial_runs, m.iterations)
    if problems or too_many:
        raise SpecError(problems + ([too_many] if too_many else []))
    return spec


def load_data(text: str, limits: SpecLimits = DEFAULT_SPEC_LIMITS) -> object:
    """The data of YAML (or JSON) text, parsed within ``limits``; raise ``SpecError``."""
    if not isinstance(text, str):
        raise SpecError([SpecProblem("", f"spec text must be a string, got {type(text).__name__}")])
    try:
        return load_yaml(text, limits)
    except SpecTooLarge as exc:
        raise SpecError([SpecProblem("", str(exc))]) from None
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_problem(exc, text)]) from None


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
    refs: list[tuple[str, str]] = []
    for key in data:
        ref = _REF_ALIASES.get(key, key) if isinstance(key, str) else None
        if ref in REFS:
            refs.append((key, ref))
            problems.append(SpecProblem(key, REFS[ref]))
    # The refused reference stands for the component: its absence is not news.
    body = {k: v for k, v in data.items() if k not in dict(refs)}
    if refs and "component" not in body:
        body["component"] = {}
    spec: SweepSpec | None = None
    try:
        spec = SweepSpec.model_validate(body)
    except ValidationError as exc:
        found = _problems(exc, body)
        if refs:
            found = [p for p in found if not p.loc.startswith("component")]
        problems.extend(found)
    except (
        ValueError,
        TypeError,
        ArithmeticError,
    ) as exc:  # pragma: no cover - a bug in a validator
        problems.append(SpecProblem("", f"invalid spec: {exc}"))
    if not refs:  # without the component there is nothing to check params against
        problems.extend(_cross_check(body, spec))
    if problems or spec is None:
        raise SpecError([_one_line(p) for p in problems] or [SpecProblem("", "invalid spec")])
    return spec


# One problem is one line a person reads at once: a path part or a message
# longer than these (a 300-character param name, a huge value quoted) is cut.
MAX_PROBLEM_CHARS = 160
MAX_LOC_PART_CHARS = 40


def _one_line(p: SpecProblem) -> SpecProblem:
    parts = re.split(r"(\.|\[\d+\])", p.loc)
    loc = "".join(
        x if len(x) <= MAX_LOC_PART_CHARS else x[: MAX_LOC_PART_CHARS - 3] + "..." for x in parts
    )
    msg = " ".join(p.msg.split())  # no newlines or runs of spaces from quoted input
    room = max(60, MAX_PROBLEM_CHARS - len(loc) - 2)
    if len(msg) > room:
        msg = msg[: room - 3] + "..."
    return SpecProblem(loc, msg)


def spec_warnings(spec: SweepSpec) -> list[str]:
    """Valid, but not what a Polyaxon user may expect; one line each.

    Shown by ``hbd validate``/``plan`` (stderr), returned by a submit, logged
    once by the daemon.
    """
    return list(_warnings(spec))


def _warnings(spec: SweepSpec) -> Iterator[str]:
    for name, p in spec.matrix.params.items():
        if p.kind in ("loguniform", "qloguniform"):
            low, high = p.value.low, p.value.high
            if 0 < low and high <= 1:
                yield (
                    f"matrix.params.{name}: {p.kind} bounds are natural-log exponents; "
                    f"[{low:g}, {high:g}] gives values in [{math.exp(low):.5g}, {math.exp(high):.5g}]. "
                    f"Did you mean [{math.log(low):.2f}, {math.log(high):.2f}] "
                    f"(= ln {low:g}, ln {high:g})?"
                )
        if p.kind == "pchoice":
            total = math.fsum(w for _, w in p.value)
            if total < 1 - PCHOICE_TOLERANCE:
                last, w = p.value[-1]
                yield (
                    f"matrix.params.{name}: probabilities sum to {total:.6g}; as in Polyaxon the "
                    f"last value {last!r} takes the remainder (p={1 - total + w:.6g})"
                )
    inputs = spec.inputs
    for where, names in (("matrix.params", spec.matrix.params), ("params", spec.params)):
        for name in names:
            if name not in inputs:
                yield (
                    f"{where}.{name}: no component input `{name}`; passed as a context param "
                    "because a template uses it (as Polyaxon does)"
                )
    yield from cluster_warnings(spec, "")
    container = spec.component.container
    if container.resources is not None:
        for name in container.resources.unused():
            yield (
                f"component.run.container.resources: `{name}` not used on a host; executors "
                f"are told cpu, memory and nvidia.com/gpu"
            )


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
    shorthand = False  # `component.container` stands for `component.run.container`
    for step in loc:
        if shorthand:
            shorthand = False
            if step == "container":
                continue
        if isinstance(cur, Mapping) and step == "run" and "run" not in cur and "container" in cur:
            parent, cur = cur, cur["container"]
            parts.append("container")
            shorthand = True
            continue
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


def _kinds_hint(kinds: list[str]) -> str:
    if len(kinds) <= 4:
        return "one of: " + ", ".join(kinds)
    common = ("choice", "uniform", "loguniform", "range", "linspace", "pchoice")
    shown = sorted(kinds, key=lambda k: (common.index(k) if k in common else len(common), k))
    return f"one of the {len(kinds)} kinds ({', '.join(shown[:5])}, ...; see the README)"


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
        close = _did_you_mean(str(key), _known_keys())
        return f"unknown key `{key}`" + (f"; did you mean `{close}`?" if close else "")
    if kind == "union_tag_not_found":
        return f"missing `kind`; expected {_kinds_hint(_expected_kinds(parts))}"
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag"))
        tags = re.findall(r"'([^']+)'", str(ctx.get("expected_tags", "")))
        close = _did_you_mean(tag, tags)
        if close:
            return f"unknown kind {_short(tag)}; did you mean `{close}`?"
        return f"unknown kind {_short(tag)}; expected {_kinds_hint(tags)}"
    msg = str(err["msg"])
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    text = msg[:1].lower() + msg[1:]
    if (
        kind not in ("missing",)
        and "input" in err
        and not isinstance(err["input"], (Mapping, list))
    ):
        text += f" (got {_short(err['input'])})"
    return text


# A value quoted in an error is cut to this, so that a problem stays one readable line.
MAX_QUOTED_CHARS = 40


def _clip(text: str) -> str:
    return text if len(text) <= MAX_QUOTED_CHARS else text[: MAX_QUOTED_CHARS - 3] + "..."


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= MAX_QUOTED_CHARS else text[: MAX_QUOTED_CHARS - 3] + "..."


def _model_keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> Iterator[str]:
    if model in seen:
        return
    seen.add(model)
    for name, info in model.model_fields.items():
        yield info.alias or name
        for arg in _types_in(info.annotation):
            yield from _model_keys(arg, seen)


def _types_in(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _types_in(arg)
    for meta in getattr(annotation, "__metadata__", ()) or ():
        yield from _types_in(meta)


def _did_you_mean(key: str, known: list[str]) -> str | None:
    # Case-blind: `workdir` is closest to `workingDir`, `max_iteration` to `maxIterations`.
    folded = {k.lower().replace("_", ""): k for k in known}
    close = difflib.get_close_matches(key.lower().replace("_", ""), list(folded), n=1, cutoff=0.75)
    return folded[close[0]] if close else None


_KNOWN_KEYS: list[str] = []


def _known_keys() -> list[str]:
    """Every key a spec may use, for did-you-mean hints (computed once)."""
    if not _KNOWN_KEYS:
        seen: set[type[BaseModel]] = set()
        keys = set(_model_keys(SweepSpec, seen)) | set(REFS) | {"container"}
        # Params are validated by kind (ParamOfKind), the tuner's params by
        # BOHBParams (_bohb_params): neither shows in SweepSpec's fields.
        for kind in KIND_FAMILIES:
            keys |= set(_model_keys(kind_model(kind), seen))
        keys |= set(_model_keys(_bohb_params_model(), seen))
        _KNOWN_KEYS.extend(sorted(keys))
    return _KNOWN_KEYS


# ---------------------------------------------------------------- cross-field checks


@functools.cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    # Built on first use: a valid spec's pieces come from the spec itself
    # (``_cross_check``), so most runs never build these validators at all.
    return TypeAdapter(tp)


def _try(tp: Any, v: object) -> Any:
    try:
        return _adapter(tp).validate_python(v)
    except ValidationError:
        return None  # already reported by the schema pass


def _mapping(v: object) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _container_path(component: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    if "container" in component and "run" not in component:
        return "component.container", _mapping(component.get("container"))
    return "component.run.container", _mapping(_mapping(component.get("run")).get("container"))


def _templates(
    container: Mapping[str, Any], where: str, parsed: Container | None
) -> Iterator[tuple[str, str, bool]]:
    """(location, template, in argv) of every templated string of the container."""
    for field in ("command", "args"):
        if parsed is not None:
            argv: list[str] = getattr(parsed, field)
        else:
            try:
                argv = _try(list[str], split_command(container.get(field))) or []
            except ValueError:
                continue  # reported by the schema pass
        for j, item in enumerate(argv):
            yield f"{where}.{field}[{j}]", item, True
    env = container.get("env")
    entries = (
        [(k, v) for k, v in env.items()]
        if isinstance(env, Mapping)
        else [(_mapping(e).get("name"), _mapping(e).get("value")) for e in env]
        if isinstance(env, list)
        else []
    )
    for name, value in entries:
        if isinstance(value, str):
            yield f"{where}.env.{name}", value, False
    for key in ("workingDir", "working_dir"):
        if isinstance(container.get(key), str):
            yield f"{where}.{key}", container[key], False


def _values_of(param: Any) -> list[Any] | None:
    """Every value a discrete param can take (None if continuous); at most MAX_VALUES_CHECKED."""
    v = param.value
    if param.kind == "choice":
        return list(v)
    if param.kind == "pchoice":
        return [x for x, _ in v]
    if param.kind == "range":
        n = v.size
    elif param.kind in ("linspace", "logspace", "geomspace"):
        n = v.num
    else:
        return None
    if n <= MAX_VALUES_CHECKED:
        return [v.at(i) for i in range(n)]
    step = n / MAX_VALUES_CHECKED  # an even sample, both ends included
    return [v.at(min(n - 1, int(i * step))) for i in range(MAX_VALUES_CHECKED)] + [v.at(n - 1)]


# Values of one discrete param checked against its input's type at submission:
# a grid larger than this is checked at this many evenly spaced points.
MAX_VALUES_CHECKED = 10_000


def _cast_problem(name: str, values: list[Any], io: IOSpec) -> str | None:
    for x in values:
        try:
            io.cast(x)
        except ValueError as exc:
            return f"value {_short(x)} cannot be cast to input `{name}` of type {io.type}: {exc}"
        if io.options is not None and x not in io.options:
            return f"value {_short(x)} is not one of input `{name}`'s options"
        if "{{" in format_value(x):
            return f"value {_short(x)} contains `{{{{`: values are never templates"
    return None


def _cross_check(data: Mapping[str, Any], spec: SweepSpec | None) -> list[SpecProblem]:
    """Problems between the parts of ``data``; ``spec`` is ``data`` validated, if it was.

    Each part is validated on its own (``_try``) so that the checks still run
    on the parts that are valid in a spec that is not; a valid spec's parts
    are taken from ``spec`` instead of being validated again.
    """
    matrix = _mapping(data.get("matrix"))
    component = _mapping(data.get("component"))
    raw_params = _mapping(matrix.get("params"))
    op_params = _mapping(data.get("params"))
    raw_inputs = component.get("inputs", [])
    if not isinstance(raw_inputs, list):
        # Without a readable input list every cross check would be noise.
        return []

    inputs: dict[str, tuple[int, IOSpec]] = {}
    unreadable: set[str] = set()  # inputs whose name we know but that did not parse
    problems: list[SpecProblem] = []
    for i, raw in enumerate(raw_inputs):
        io = spec.component.inputs[i] if spec is not None else _try(IOSpec, raw)
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
        if io.has_default and (why := _cast_problem(io.name, [io.value], io)):
            problems.append(SpecProblem(f"component.inputs[{i}].value", why))

    where, container = _container_path(component)
    used: set[str] = set()  # names the templates use
    as_args = False
    parsed: list[tuple[str, str, bool, list[Any]]] = []
    parsed_container = spec.component.container if spec is not None else None
    for loc, template, in_argv in _templates(container, where, parsed_container):
        try:
            exprs = expressions(template)
        except TemplateError as exc:
            problems.append(SpecProblem(loc, str(exc)))
            continue
        parsed.append((loc, template, in_argv, exprs))
        for e in exprs:
            if e.kind == "as_args":
                as_args = True
            elif e.kind != "global":
                used.add(e.name)

    def undeclared(loc: str, name: str) -> SpecProblem | None:
        if name in used or as_args:
            return None  # a context param, as in Polyaxon (spec_warnings says so)
        close = difflib.get_close_matches(name, list(inputs), n=1, cutoff=0.6)
        hint = f"; did you mean `{close[0]}`?" if close else "; no template uses it"
        return SpecProblem(loc, f"no component input named `{name}`{hint}")

    for name, raw in raw_params.items():
        loc = f"matrix.params.{name}"
        if name in unreadable:
            continue
        if name not in inputs:
            if problem := undeclared(loc, name):
                problems.append(problem)
            continue
        param = spec.matrix.params[name] if spec is not None else _try(ParamOfKind, raw)
        if param is None:
            continue
        io = inputs[name][1]
        want = _wanted_type(param.kind)
        if want is not None and io.type not in want:
            problems.append(
                SpecProblem(
                    loc,
                    f"{param.kind} gives {' or '.join(want)} values but input `{name}` has type {io.type}",
                )
            )
        elif io.type == "int" and _makes_fractions(param):
            problems.append(
                SpecProblem(
                    loc, f"{param.kind} gives non-integer values but input `{name}` has type int"
                )
            )
        elif (values := _values_of(param)) is not None and (why := _cast_problem(name, values, io)):
            problems.append(SpecProblem(loc, why))
        elif io.options is not None and values is None:
            problems.append(
                SpecProblem(loc, f"input `{name}` has options; use choice or pchoice over them")
            )

    resource = spec.matrix.resource if spec is not None else _try(Resource, matrix.get("resource"))
    resource_name = resource.name if resource is not None else None
    if resource is not None and resource.name not in unreadable:
        if resource.name not in inputs:
            problems.append(
                SpecProblem(
                    "matrix.resource.name",
                    f"no component input named `{resource.name}`; declare it "
                    f"as an input of type {resource.type} so that trials receive it",
                )
            )
        else:
            got = inputs[resource.name][1].type
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

    for name, raw in op_params.items():
        loc = f"params.{name}"
        p = spec.params[name] if spec is not None else _try(OperationParam, raw)
        if p is not None and p.value is None:
            problems.append(SpecProblem(loc, "has no value; give `value: ...`"))
        elif name in raw_params:
            problems.append(SpecProblem(loc, "also a matrix param; set it in one place"))
        elif name == resource_name:
            problems.append(SpecProblem(loc, "is the resource; Hyperband sets it"))
        elif name not in inputs:
            if name not in unreadable and (problem := undeclared(loc, name)):
                problems.append(problem)
        elif p is not None and (why := _cast_problem(name, [p.value], inputs[name][1])):
            problems.append(SpecProblem(f"{loc}.value", why))

    supplied = set(raw_params) | set(op_params) | ({resource_name} if resource_name else set())
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

    known = set(inputs) | set(raw_params) | set(op_params) | unreadable
    for loc, _template, in_argv, exprs in parsed:
        for e in exprs:
            if e.kind == "global":
                if e.name in EXECUTOR_GLOBALS and not in_argv:
                    problems.append(
                        SpecProblem(
                            loc,
                            f"`{{{{ globals.{e.name} }}}}` is known on the executor only: use it in "
                            "command/args (or $HBD_TRIAL_DIR)",
                        )
                    )
                continue
            if e.kind == "as_args" or e.name in unreadable:
                continue
            if e.name not in known:
                close = difflib.get_close_matches(e.name, list(known), n=1, cutoff=0.6)
                hint = f"; did you mean `{close[0]}`?" if close else ""
                problems.append(
                    SpecProblem(
                        loc, f"`{{{{ {e.name} }}}}` names no component input or param{hint}"
                    )
                )
            elif (
                coverage_known
                and e.name in inputs
                and e.name not in supplied
                and not inputs[e.name][1].has_default
                and inputs[e.name][1].is_optional
            ):
                # (a required input without a value is reported above)
                problems.append(
                    SpecProblem(
                        loc,
                        f"`{{{{ {e.name} }}}}` has no value: input `{e.name}` is not a param or the resource and has no default",
                    )
                )
    working_dir = container.get("workingDir", container.get("working_dir"))
    if isinstance(working_dir, str) and not working_dir.startswith("/"):
        problems.append(
            SpecProblem(
                f"{where}.workingDir",
                "a relative path needs the spec's folder: hbd validate/submit/run resolve it; "
                "over the API give an absolute path",
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


def __getattr__(name: str) -> Any:
    # `Param`, the union of every kind, is made on first use (see hbd.core.params).
    if name == "Param":
        from hbd.core import params

        return params.Param
    raise AttributeError(f"module 'hbd.core.spec' has no attribute {name!r}")
