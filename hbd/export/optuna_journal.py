"""A sweep as an Optuna journal file, for optuna-dashboard and Optuna's own tools.

    hbd export SWEEP --optuna-journal sweep.log
    optuna-dashboard sweep.log

One Optuna trial per hbd trial run (a configuration at one rung's resource):
its params, its final value of the sweep's metric, and its intermediate values
(the metric as each ``trial.metrics`` event reported it, at the reported
``step`` when there is one, else at the report's number; executors forward
reports best effort, so a curve holds the reports the daemon received), so the dashboard
draws learning curves, parallel coordinates and importances. hbd's own
identities ride along as user attributes (``hbd_trial_id``, ``bracket``,
``rung``, ``resource``, ``parent``, ``status``, ...).

The file is written through Optuna's own API (``JournalStorage`` over a
``JournalFileBackend``, ``Study.add_trials``), never by hand, so it is what
Optuna itself would write. Optuna is an optional extra (``[optuna]``),
imported only here and only when exporting.

States: succeeded → COMPLETE; failed, or succeeded without the metric → FAIL;
cancelled → PRUNED (stopped from outside before its end, as a pruner would).
Trial runs that have not ended are left out: an export is a snapshot of what
is known, taken again later for more.

Distributions come from the spec's parameter kinds and the values drawn:
``choice``/``pchoice`` are categorical over the spec's values, numbers are
Int/FloatDistributions over the spec's declared range widened to every value
drawn (log-scaled for the log kinds; the range drawn for unbounded kinds such
as ``normal``), anything else (dates, mixed types) is categorical over the
values drawn.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hbd.core.vocabulary import TERMINAL_TRIAL_STATUSES, EventType, TrialStatus

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial

INSTALL_HINT = "pip install optuna (or install hbd with its [optuna] extra)"
CATEGORICAL_KINDS = frozenset({"choice", "pchoice"})
# Kinds whose values spread over orders of magnitude: a log axis shows them.
LOG_KINDS = frozenset(
    {"loguniform", "qloguniform", "lognormal", "qlognormal", "logspace", "geomspace"}
)
ENDED = TERMINAL_TRIAL_STATUSES
# Optuna's intermediate steps are ints; a reported step beyond this is not a
# step count (and would not fit SQLite-backed Optuna storages either).
MAX_STEP = 2**63 - 1


class OptunaMissing(ImportError):
    """Optuna is not installed; the message says how to install it."""


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    study_name: str
    trials: int  # trial runs written
    skipped_unfinished: int  # trial runs not written because they had not ended
    intermediate_values: int


def require_optuna() -> Any:
    """The optuna module, or OptunaMissing saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise OptunaMissing(f"exporting to Optuna needs Optuna: {INSTALL_HINT}") from None
    return optuna


def _categorical_value(v: Any) -> bool | int | float | str | None:
    """Optuna's categorical choices are JSON scalars; lists and mappings become JSON text."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return json.dumps(v, sort_keys=True)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def distributions(
    spec_params: Mapping[str, Any], trials: Sequence[Mapping[str, Any]]
) -> dict[str, BaseDistribution]:
    """One Optuna distribution per parameter that any of ``trials`` has a value for."""
    optuna = require_optuna()
    dist = optuna.distributions
    names = sorted({k for t in trials for k in t["config"]})
    out: dict[str, BaseDistribution] = {}
    for name in names:
        kind = str((spec_params.get(name) or {}).get("kind", ""))
        drawn = [t["config"][name] for t in trials if name in t["config"]]
        if kind in CATEGORICAL_KINDS:
            listed = (spec_params[name] or {}).get("value") or []
            choices = [_categorical_value(c[0] if kind == "pchoice" else c) for c in listed]
            extra = [_categorical_value(v) for v in drawn]
            out[name] = dist.CategoricalDistribution(_unique([*choices, *extra]))
        elif drawn and all(_is_number(v) for v in drawn):
            low, high = min(drawn), max(drawn)
            declared = declared_range(kind, (spec_params.get(name) or {}).get("value"))
            if declared is not None:  # the spec's range, widened to hold every value drawn
                low, high = min(low, declared[0]), max(high, declared[1])
            log = kind in LOG_KINDS and low > 0
            if all(isinstance(v, int) for v in drawn):
                out[name] = dist.IntDistribution(int(low), int(high), log=log)
            else:
                out[name] = dist.FloatDistribution(float(low), float(high), log=log)
        else:
            out[name] = dist.CategoricalDistribution(
                _unique([_categorical_value(v) for v in drawn])
            )
    return out


def declared_range(kind: str, value: Any) -> tuple[float, float] | None:
    """The value range a numeric kind's spec declares, or None (unbounded kinds such
    as normal, or a form this does not know: the values drawn are used alone)."""
    if not isinstance(value, Mapping):
        return None
    try:
        if kind in ("uniform", "quniform"):
            bounds = (float(value["low"]), float(value["high"]))
        elif kind in ("loguniform", "qloguniform"):  # bounds are natural-log exponents
            bounds = (math.exp(value["low"]), math.exp(value["high"]))
        elif kind == "range":
            start, stop, step = value["start"], value["stop"], value["step"]
            last = start + step * math.ceil((stop - start) / step - 1)  # stop is excluded
            bounds = (float(min(start, last)), float(max(start, last)))
        elif kind in ("linspace", "geomspace"):
            bounds = (float(value["start"]), float(value["stop"]))
        elif kind == "logspace":
            base = value.get("base", 10)
            bounds = (float(base ** value["start"]), float(base ** value["stop"]))
        else:
            return None
    except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    low, high = min(bounds), max(bounds)
    return (low, high) if math.isfinite(low) and math.isfinite(high) else None


def _unique(values: Iterable[Any]) -> tuple[Any, ...]:
    seen: list[Any] = []
    for v in values:
        if not any(v == s and type(v) is type(s) for s in seen):
            seen.append(v)
    return tuple(seen)


def intermediate_values(metric: str, reports: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """Step → value of ``metric`` from one trial's ``trial.metrics`` payloads, in order.

    The step is the report's own ``step`` when it is a whole number, else the
    report's number (``seq``); a later report of the same step wins.
    """
    out: dict[int, float] = {}
    for payload in reports:
        metrics: Mapping[str, Any] = payload.get("metrics") or {}
        value: Any = metrics.get(metric)
        if not _is_number(value):
            continue
        step: Any = metrics.get("step")
        if not (_is_number(step) and float(step).is_integer() and 0 <= step <= MAX_STEP):
            step = payload.get("seq")
            if not isinstance(step, int) or not 0 <= step <= MAX_STEP:
                continue
        out[int(step)] = float(value)
    return out


def _when(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def frozen_trials(
    detail: Mapping[str, Any],
    spec_params: Mapping[str, Any],
    trials: Sequence[Mapping[str, Any]],
    reports: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[FrozenTrial]:
    """The Optuna trials for the ended ones of ``trials`` (the API's trial views).

    ``reports``: each trial id's ``trial.metrics`` payloads, in log order.
    """
    optuna = require_optuna()
    state = optuna.trial.TrialState
    metric = detail["metric"]["name"]
    ended = [t for t in trials if t["status"] in ENDED]
    dists = distributions(spec_params, ended)
    out = []
    for t in ended:
        value = t["metric"] if _is_number(t["metric"]) else None
        if t["status"] == TrialStatus.SUCCEEDED and value is not None:
            st = state.COMPLETE
        elif t["status"] == TrialStatus.CANCELLED:
            st, value = state.PRUNED, None
        else:
            st, value = state.FAIL, None
        params = {
            name: _categorical_value(v)
            if isinstance(dists[name], optuna.distributions.CategoricalDistribution)
            else v
            for name, v in t["config"].items()
        }
        attrs = {
            "hbd_trial_id": t["id"],
            "hbd_sweep_id": t["sweep_id"],
            "bracket": t["bracket"],
            "rung": t["rung"],
            "index": t["index"],
            "resource": t["resource"],
            detail["resource"]["name"]: t["resource"],
            "status": t["status"],
            "parent": t["parent"],
            "metrics": t.get("metrics") or {},
        }
        if t.get("reason"):
            attrs["reason"] = t["reason"]
        curve = intermediate_values(metric, reports.get(t["id"], ()))
        if not curve and value is not None and _is_number(t["resource"]):
            # Reported only at its end (no trial.metrics event survived): one
            # point at its resource, so runs of every rung line up by budget.
            curve = {round(t["resource"]): value}
        frozen = optuna.trial.create_trial(
            state=st,
            value=value,
            params=params,
            distributions={k: dists[k] for k in params},
            user_attrs=attrs,
            intermediate_values=curve,
        )
        start, end = _when(t.get("started_at") or t.get("scheduled_at")), _when(t.get("ended_at"))
        if start is not None:
            frozen.datetime_start = start
        if end is not None:
            frozen.datetime_complete = max(end, frozen.datetime_start or end)
        out.append(frozen)
    return out


@dataclass(frozen=True)
class SweepData:
    """What an export reads from the daemon: ``detail`` (GET /v1/sweeps/{id}), the
    spec's ``params`` (from ``sweep.submitted``), the trial runs (the API's trial
    views) and each trial's ``trial.metrics`` payloads in log order."""

    detail: Mapping[str, Any]
    params: Mapping[str, Any]
    trials: Sequence[Mapping[str, Any]]
    reports: Mapping[str, Sequence[Mapping[str, Any]]]


# Events an export reads: the spec (for the parameters' kinds) and the curves.
EXPORT_EVENT_TYPES = (EventType.SWEEP_SUBMITTED, EventType.TRIAL_METRICS)


def sweep_data(
    detail: Mapping[str, Any],
    trials: Sequence[Mapping[str, Any]],
    events: Iterable[tuple[str, str | None, Mapping[str, Any]]],
) -> SweepData:
    """Gather ``(type, trial_id, payload)`` of the sweep's EXPORT_EVENT_TYPES events."""
    params: Mapping[str, Any] = {}
    reports: dict[str, list[Mapping[str, Any]]] = {}
    for etype, trial_id, payload in events:
        if etype == EventType.SWEEP_SUBMITTED:
            params = dict((payload.get("spec_json") or {}).get("matrix", {}).get("params") or {})
        elif etype == EventType.TRIAL_METRICS and trial_id:
            reports.setdefault(trial_id, []).append(payload)
    return SweepData(detail, params, trials, reports)


def fill_study(storage: Any, data: SweepData, study_name: str | None = None) -> Any:
    """A new study in ``storage`` (any Optuna storage) holding the sweep; returns it."""
    optuna = require_optuna()
    detail = data.detail
    frozen = frozen_trials(detail, data.params, data.trials, data.reports)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        direction = "maximize" if detail["metric"]["optimization"] == "maximize" else "minimize"
        study = optuna.create_study(
            storage=storage, study_name=study_name or detail["id"], direction=direction
        )
        with warnings.catch_warnings():  # experimental since Optuna 3.2; the dashboard shows it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([detail["metric"]["name"]])
        for key in ("id", "name", "seed", "status", "reason", "max_iterations", "eta"):
            study.set_user_attr(f"hbd_{key}" if key != "id" else "hbd_sweep_id", detail.get(key))
        study.set_user_attr("hbd_resource", detail["resource"])
        study.add_trials(frozen)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return study


def write_journal(
    path: Path, data: SweepData, *, study_name: str | None = None, overwrite: bool = False
) -> ExportSummary:
    """Write the sweep to a new Optuna journal file at ``path``.

    Written beside it under a temporary name and renamed into place, so a
    reader never sees half a journal and a failed export leaves nothing.
    Refuses an existing ``path`` unless ``overwrite``.
    """
    optuna = require_optuna()
    from optuna.storages.journal import JournalFileBackend

    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (remove it, or pass --force to replace it)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp)))
        study = fill_study(storage, data, study_name)
        written = study.get_trials(deepcopy=False)  # (read back from the file: before the rename)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportSummary(
        path=path,
        study_name=study.study_name,
        trials=len(written),
        skipped_unfinished=sum(1 for t in data.trials if t["status"] not in ENDED),
        intermediate_values=sum(len(t.intermediate_values) for t in written),
    )
