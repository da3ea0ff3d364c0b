"""Model-based sampling as BOHB does it (Falkner, Klein and Hutter, ICML 2018).

``BOHBSampler.propose(bracket=, index=, history=)`` returns one configuration:

1. With probability ``random_fraction``, or while no model can be fitted, the
   configuration is *exactly* the random sampler's (``space.sample_config`` for
   the same seed, bracket and index): a sweep without results is the random
   sweep, bit for bit.
2. Otherwise it fits two kernel densities on the results at the largest
   resource that has enough of them (``min_points_in_model``, 4; BOHB: d + 1, in
   both the good and the bad set): l(x) on the best ``top_n_percent`` and g(x)
   on the rest (a failed run, loss None, is worst). It draws ``num_samples``
   candidates from l with bandwidths widened by ``bandwidth_factor`` and keeps
   the one maximising l(x) / g(x). With ``constant_liar`` g(x) also holds the
   bracket's earlier model proposals (indices below this one), as if they had
   ended badly.

Densities live in a unit-cube encoding of the space, one coordinate per
parameter: bounded continuous kinds linearly (log kinds in log space, quantized
kinds before rounding), unbounded normal kinds as z-scores over
±NORMAL_TAIL_SCALES, grids (range, *space, dates) by the centre of their
index's cell, with a Gaussian product kernel; choices are categorical with
the Aitchison–Aitken kernel (BOHB's, via statsmodels). By default
(``multivariate: false``) the densities are products of one density per
parameter, as Optuna's independent TPE; ``multivariate: true`` is BOHB's joint
density (``BOHBSettings`` says why the default differs). Decoding goes back
through the parameter's own grid arithmetic (``.at``), so every proposed value
has the kind, type and quantization the random sampler gives.

Determinism: a proposal is a pure function of (params, seed, settings,
bracket, index, the history as a multiset). The history is sorted canonically
before use, and all randomness comes from a generator keyed by
(seed, bracket, index), so the order in which results completed never changes
a configuration. The bracket's earlier proposals that ``constant_liar`` adds
are the same function at lower indices: whatever was asked before, a sampler
answers as a fresh one would. Why a numpy KDE of our own and not Optuna or scipy: neither
is a runtime dependency (Optuna is a heavy import for ``hbd validate``; scipy's
``gaussian_kde`` has no categorical kernel and one shared bandwidth matrix), and
the whole model is ~100 lines of numpy whose every draw we key ourselves.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from hbd.core.params import (
    NORMAL_TAIL_SCALES,
    ChoiceParam,
    DateRangeParam,
    DateRangeValue,
    DateTimeRangeParam,
    DateTimeRangeValue,
    Frozen,
    GeomspaceParam,
    GeomspaceValue,
    LinspaceParam,
    LinspaceValue,
    LogNormalParam,
    LogspaceParam,
    LogspaceValue,
    LogUniformParam,
    LogUniformValue,
    NormalParam,
    NormalValue,
    Param,
    PChoiceParam,
    QLogNormalParam,
    QLogUniformParam,
    QNormalParam,
    QNormalValue,
    QUniformParam,
    QUniformValue,
    RangeParam,
    RangeValue,
    UniformParam,
    UniformValue,
)
from hbd.core.sampler import RunResult, Sampler
from hbd.core.space import JSONValue, sample_config

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

# numpy is imported inside functions, as in space.py: `hbd validate` never fits a model.

__all__ = ["BOHBSampler", "BOHBSettings", "RunResult", "Sampler"]

# Each density keeps at most this many points (the good ones are the best,
# the bad ones the next in canonical order): a proposal costs
# O(num_samples * points * parameters), and a sweep's history is unbounded.
MAX_MODEL_POINTS = 4096
# Candidates per proposal, at most: BOHB uses 64; more only costs time.
MAX_NUM_SAMPLES = 4096
# A truncated-normal draw is redrawn at most this often before it is clipped
# into the cube: at BOHB's settings a round accepts more than 1/5 of the draws
# (bandwidth <= 0.53, times 3), so 64 rounds miss with odds below 1e-6; it
# bounds the loop whatever the settings.
MAX_REJECTION_ROUNDS = 64
# Kernel values computed at once, at most (candidates x points x parameters):
# 2**20 floats is 8 MiB per intermediate array, however large the settings.
KERNEL_CELLS = 2**20
# Densities are compared in log space; this is BOHB's floor (1e-32) on both.
LOG_DENSITY_FLOOR = math.log(1e-32)
# Key word that separates the model's generator from space.param_rng's keys
# (which have 4 words): this one has 5, so the streams can never coincide.
_MODEL_STREAM = 0xB0B


# ---------------------------------------------------------------- settings


class BOHBSettings(Frozen):
    """The model's settings (``matrix.tuner.params``).

    BOHB's defaults except six, and one addition, measured on
    ``bench/quality.py`` (one worker; docs/search.md has the tables):

    - ``multivariate: false``: with d + 1 good points a joint density's
      normal-reference bandwidth hardly shrinks (n^(-1/(4+d))), and drawn three
      times wider its candidates fill the whole cube: proposals were no better
      than random ones even after four iterations. One density per parameter
      concentrates.
    - ``min_bandwidth: 0.02``: a product of marginals collapses once the good
      points agree (its bandwidth reached the old floor, 0.001), and the sweep
      froze in the first basin it found (Hartmann6's local minimum, regret
      0.12). The floor keeps a local search going, like Optuna's "magic clip".
    - ``top_n_percent: 10``, ``min_points_in_model: 4``, ``num_samples: 24``
      (Optuna's TPE: its good set is the best 10%, from 24 candidates): the
      good density is the best few results, not the best d + 1 (on Hartmann6
      a third of the top resource's results after two iterations), and fewer
      candidates keep a bracket's proposals, all drawn from one model, apart.
      Median regret over seeds 0..199 at 0.5 / 1 / 5 iterations, Hartmann6:
      before 0.995 / 0.627 / 0.140, these 0.998 / 0.539 / 0.110 (Optuna's TPE
      with its Hyperband pruner 1.435 / 0.554 / 0.066); the learning curves:
      before 0.115 / 0.089 / 0.050, these 0.115 / 0.084 / 0.044 (Optuna 0.107
      / 0.081 / 0.062).
    - ``constant_liar: true`` and ``random_fraction: 0``: all of a bracket's
      proposals are drawn from one history, so each counts the bracket's
      earlier ones as bad results (Optuna's ``constant_liar``) and looks
      elsewhere; that spread is the exploration BOHB's random third gave, and
      like Optuna's TPE (random only until its model starts) no proposal is
      random once a model is fitted. Median regret over seeds 0..399 at
      0.5 / 1 / 5 iterations, Hartmann6: before (a fifth random, no liar)
      0.936 / 0.513 / 0.112, these 0.926 / 0.438 / 0.070 (Optuna 1.382 /
      0.547 / 0.070); the curves 0.116 / 0.083 / 0.041, these 0.111 / 0.074 /
      0.036 (Optuna 0.107 / 0.080 / 0.061).

    A sweep records its settings in full (``Search.to_json``), so a sweep
    submitted with older defaults replays with them.
    """

    # Points needed in each of the good and bad sets before a resource's model
    # is used; None: number of parameters + 1 (BOHB's default, and hbd's before
    # the good set shrank: a product of one density per parameter needs no d + 1).
    min_points_in_model: int | None = Field(default=4, ge=2, le=MAX_MODEL_POINTS)
    # Percentage of a resource's results that form the good density l(x).
    top_n_percent: int = Field(default=10, ge=1, le=99)
    # Candidates drawn from l(x) per proposal; the best l/g is kept (BOHB: 64).
    num_samples: int = Field(default=24, ge=1, le=MAX_NUM_SAMPLES)
    # Share of proposals that are the random sampler's configuration (BOHB: 1/3).
    random_fraction: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    # Candidates are drawn with the good density's bandwidths times this.
    bandwidth_factor: float = Field(default=3.0, gt=0, le=100, allow_inf_nan=False)
    # No bandwidth falls below this (in the unit cube), so a model of
    # identical points still explores (BOHB: 0.001).
    min_bandwidth: float = Field(default=0.02, gt=0, le=1, allow_inf_nan=False)
    # One joint density over all parameters (BOHB's), or a product of one
    # density per parameter (Optuna's independent TPE, the default here).
    multivariate: bool = Field(default=False, strict=True)
    # A bracket's earlier model proposals join the bad density while it
    # proposes its next (Optuna's constant_liar, for its running trials).
    constant_liar: bool = Field(default=True, strict=True)

    @field_validator(
        "min_points_in_model",
        "top_n_percent",
        "num_samples",
        "random_fraction",
        "bandwidth_factor",
        "min_bandwidth",
        mode="before",
    )
    @classmethod
    def _not_a_bool(cls, v: object) -> object:
        # Python counts a bool as an int: `topNPercent: true` would be 1.
        if isinstance(v, bool):
            raise ValueError(f"expected a number, got {v!r}")
        return v


# What a sweep whose recorded settings lack a field ran with: the field's value
# before it existed. ``Search.make_sampler`` puts the record over these.
UNRECORDED_SETTINGS: dict[str, object] = {"constant_liar": False}


# ---------------------------------------------------------------- encoding


def _number(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _canonical(x: object) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"))


class _Dim:
    """One parameter's coordinate: value -> [0, 1] (or category) and back."""

    categories = 0  # > 0: categorical with this many categories

    def encode(self, x: object) -> float | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, u: float) -> JSONValue:  # pragma: no cover - abstract
        raise NotImplementedError

    def snap(self, u: float) -> float:
        """The coordinate of the value ``u`` decodes to (grids move to their cell)."""
        return u


class _Grid(_Dim):
    """n ordered values, by index; coordinate (i + 0.5) / n."""

    def __init__(self, n: int, index_of: _IndexOf, at: _At) -> None:
        self.n, self._index_of, self._at = n, index_of, at

    def encode(self, x: object) -> float | None:
        try:
            i = self._index_of(x)
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            return None
        if i is None or not 0 <= i < self.n:
            return None
        return (i + 0.5) / self.n

    def _index(self, u: float) -> int:
        return min(max(int(u * self.n), 0), self.n - 1)

    def decode(self, u: float) -> JSONValue:
        return self._at(self._index(u))

    def snap(self, u: float) -> float:
        return (self._index(u) + 0.5) / self.n


class _Linear(_Dim):
    """A continuous coordinate: forward maps a value into [0, 1]."""

    def __init__(self, forward: _Forward, backward: _Backward) -> None:
        self._forward, self._backward = forward, backward

    def encode(self, x: object) -> float | None:
        f = _number(x)
        if f is None:
            return None
        try:
            u = self._forward(f)
        except (ValueError, OverflowError):
            return None
        return min(max(u, 0.0), 1.0) if math.isfinite(u) else None

    def decode(self, u: float) -> JSONValue:
        return self._backward(min(max(u, 0.0), 1.0))


class _Categorical(_Dim):
    def __init__(self, values: list[JSONValue], allowed: list[int]) -> None:
        self.categories = len(values)
        self._values = values
        self.allowed = allowed  # the indices the random sampler can draw
        self._index: dict[str, int] = {}
        for i in allowed:
            self._index.setdefault(_canonical(values[i]), i)

    def encode(self, x: object) -> float | None:
        try:
            i = self._index.get(_canonical(x))
        except (TypeError, ValueError):
            return None
        return None if i is None else float(i)

    def decode(self, u: float) -> JSONValue:
        return copy.deepcopy(self._values[int(u)])


if TYPE_CHECKING:
    from collections.abc import Callable

    _IndexOf = Callable[[object], int | None]
    _At = Callable[[int], JSONValue]
    _Forward = Callable[[float], float]
    _Backward = Callable[[float], JSONValue]
    _Row = list[float]  # one configuration in the unit-cube encoding


def _round_index(x: float) -> int:
    return math.floor(x + 0.5)


def _affine(lo: float, hi: float) -> tuple[_Forward, Callable[[float], float]]:
    span = hi - lo
    return (lambda x: (x - lo) / span), (lambda u: lo + u * span)


def _below(x: float, high: float, low: float) -> float:
    # uniform draws are in [low, high): keep a decoded value off `high`.
    return math.nextafter(high, low) if x >= high else x


def _dimension(param: Param) -> _Dim:
    match param:
        case ChoiceParam(value=values):
            return _Categorical(list(values), list(range(len(values))))
        case PChoiceParam(value=pairs):
            # zero-weight entries are never drawn by the random sampler either
            allowed = [i for i, (_, w) in enumerate(pairs) if w > 0] or [len(pairs) - 1]
            return _Categorical([x for x, _ in pairs], allowed)
        case RangeParam(value=v):
            return _range(v)
        case LinspaceParam(value=v):
            return _linspace(v)
        case LogspaceParam(value=v):
            return _logspace(v)
        case GeomspaceParam(value=v):
            return _geomspace(v)
        case DateRangeParam(value=v):
            return _daterange(v)
        case DateTimeRangeParam(value=v):
            return _datetimerange(v)
        case UniformParam(value=v):
            return _uniform(v)
        case LogUniformParam(value=v):
            return _loguniform(v)
        case QUniformParam(value=v):
            return _quniform(v, log=False)
        case QLogUniformParam(value=v):
            return _quniform(v, log=True)
        case NormalParam(value=v):
            return _normal(v, log=False)
        case LogNormalParam(value=v):
            return _normal(v, log=True)
        case QNormalParam(value=v):
            return _qnormal(v, log=False)
        case QLogNormalParam(value=v):
            return _qnormal(v, log=True)
    raise TypeError(f"not a parameter: {param!r}")  # pragma: no cover


def _range(v: RangeValue) -> _Dim:
    start, step = float(v.start), float(v.step)
    return _Grid(v.size, lambda x: _round_index((_num(x) - start) / step), v.at)


def _linspace(v: LinspaceValue) -> _Dim:
    a, b, n = float(v.start), float(v.stop), v.num
    return _Grid(
        n, lambda x: 0 if n == 1 else _round_index((_num(x) - a) / (b - a) * (n - 1)), v.at
    )


def _logspace(v: LogspaceValue) -> _Dim:
    a, b, n, base = float(v.start), float(v.stop), v.num, float(v.base)

    def index(x: object) -> int:
        if n == 1 or base == 1:
            return 0
        return _round_index((math.log(_num(x)) / math.log(base) - a) / (b - a) * (n - 1))

    return _Grid(n, index, v.at)


def _geomspace(v: GeomspaceValue) -> _Dim:
    la, lb, n = math.log10(abs(v.start)), math.log10(abs(v.stop)), v.num
    sign = 1.0 if v.start > 0 else -1.0

    def index(x: object) -> int:
        f = _num(x) * sign
        return 0 if n == 1 else _round_index((math.log10(f) - la) / (lb - la) * (n - 1))

    return _Grid(n, index, v.at)


def _daterange(v: DateRangeValue) -> _Dim:
    def index(x: object) -> int:
        if not isinstance(x, str):
            return -1
        return (date.fromisoformat(x) - v.start).days // v.step

    return _Grid(v.size, index, lambda i: v.at(i).isoformat())


def _datetimerange(v: DateTimeRangeValue) -> _Dim:
    step = timedelta(seconds=v.step)

    def index(x: object) -> int:
        if not isinstance(x, str):
            return -1
        return _round_index((datetime.fromisoformat(x) - v.start) / step)

    return _Grid(v.size, index, lambda i: v.at(i).isoformat())


def _uniform(v: UniformValue) -> _Dim:
    lo, hi = float(v.low), float(v.high)
    fwd, back = _affine(lo, hi)
    return _Linear(fwd, lambda u: _below(back(u), hi, lo))


def _loguniform(v: LogUniformValue) -> _Dim:
    lo, hi = float(v.low), float(v.high)
    fwd, back = _affine(lo, hi)
    return _Linear(
        lambda x: fwd(math.log(x)),
        lambda u: min(max(math.exp(back(u)), math.exp(lo)), math.exp(hi)),
    )


def _quniform(v: QUniformValue, *, log: bool) -> _Dim:
    # The coordinate is the un-rounded draw's (in log space for qloguniform).
    fwd, back = _affine(float(v.low), float(v.high))
    kmin, kmax = v.grid()
    q = float(v.q)

    def decode(u: float) -> JSONValue:
        x = math.exp(back(u)) if log else back(u)
        return v.at(min(max(_round_index(x / q), kmin), kmax))

    return _Linear((lambda x: fwd(math.log(x))) if log else fwd, decode)


# Unbounded normals: the coordinate is the z-score, over ±NORMAL_TAIL_SCALES
# (the reach params.py checks to be finite).
_Z = float(NORMAL_TAIL_SCALES)


def _normal(v: NormalValue, *, log: bool) -> _Dim:
    loc, scale = float(v.loc), float(v.scale)
    fwd, back = _affine(-_Z, _Z)

    def decode(u: float) -> JSONValue:
        y = loc + scale * back(u)
        return math.exp(y) if log else y

    return _Linear(lambda x: fwd(((math.log(x) if log else x) - loc) / scale), decode)


def _qnormal(v: QNormalValue, *, log: bool) -> _Dim:
    loc, scale, q = float(v.loc), float(v.scale), float(v.q)
    fwd, back = _affine(-_Z, _Z)

    def forward(x: float) -> float:
        if log:  # a draw below q / 2 rounds to 0: it sits at the low end
            return fwd((math.log(x) - loc) / scale) if x > 0 else 0.0
        return fwd((x - loc) / scale)

    def decode(u: float) -> JSONValue:
        y = loc + scale * back(u)
        return v.at(_round_index((math.exp(y) if log else y) / q))

    return _Linear(forward, decode)


def _num(x: object) -> float:
    f = _number(x)
    if f is None:
        raise TypeError(f"not a finite number: {x!r}")
    return f


# ---------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class _KDE:
    """A product-kernel density over encoded points (rows)."""

    data: NDArray[np.float64]  # (n, d)
    bandwidth: NDArray[np.float64]  # (d,)
    joint: bool  # multivariate (BOHB) or a product of marginals (TPE)

    def log_density(
        self, x: NDArray[np.float64], categories: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        import numpy as np

        # Candidates in chunks: the kernel matrix is (chunk, points, parameters),
        # so memory stays under KERNEL_CELLS floats whatever the settings.
        n, d = self.data.shape
        step = max(1, KERNEL_CELLS // max(1, n * d))
        parts = [self._log_density(x[i : i + step], categories) for i in range(0, len(x), step)]
        out: NDArray[np.float64] = np.concatenate(parts) if parts else np.empty(0)
        return out

    def _log_density(
        self, x: NDArray[np.float64], categories: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        import numpy as np

        cat = categories > 0
        diff = x[:, None, :] - self.data[None, :, :]  # (m, n, d)
        bw = self.bandwidth
        gauss = -0.5 * (diff / bw) ** 2 - np.log(bw * math.sqrt(2 * math.pi))
        # Aitchison–Aitken: 1 - λ on the observed category, λ / (c - 1) elsewhere.
        c = np.maximum(categories, 2).astype(float)
        # Only categorical dimensions use it (their λ < 1): a continuous one's
        # bandwidth may be 1 (min_bandwidth: 1), whose log(0) numpy warns about.
        same = np.log(1 - np.where(cat, bw, 0.0))
        other = np.log(bw / (c - 1))
        aa = np.where(diff == 0, same, other)
        per_dim = np.where(cat, aa, gauss)  # (m, n, d)
        if self.joint:  # one kernel per point, the product over parameters
            log_k = per_dim.sum(axis=2)  # (m, n)
            top = log_k.max(axis=1, keepdims=True)
            out = top[:, 0] + np.log(np.exp(log_k - top).mean(axis=1))
        else:  # the product of each parameter's own 1-d density (Optuna's independent TPE)
            top_d = per_dim.max(axis=1, keepdims=True)  # (m, 1, d)
            marginal = top_d[:, 0, :] + np.log(np.exp(per_dim - top_d).mean(axis=1))
            out = marginal.sum(axis=1)
        result: NDArray[np.float64] = np.maximum(out, LOG_DENSITY_FLOOR)
        return result

    def adding(self, rows: Sequence[_Row]) -> _KDE:
        """This density with ``rows`` as more points, at the same bandwidths
        (at most MAX_MODEL_POINTS in all: the first, its own, are kept)."""
        import numpy as np

        data = np.concatenate([self.data, np.array(rows, dtype=float)])[:MAX_MODEL_POINTS]
        return _KDE(data, self.bandwidth, self.joint)


def _bandwidths(
    data: NDArray[np.float64], dims: Sequence[_Dim], min_bandwidth: float, joint: bool
) -> NDArray[np.float64]:
    """statsmodels' normal reference rule (1.06 σ n^(-1/(4+d))), as BOHB uses it."""
    import numpy as np

    n, d = data.shape
    # A product of marginals is d one-dimensional estimates: the rule's d is 1.
    bw = 1.06 * data.std(axis=0) * n ** (-1.0 / (4 + (d if joint else 1)))
    floors = np.array(
        [
            max(min_bandwidth, 0.5 / dim.n) if isinstance(dim, _Grid) else min_bandwidth
            for dim in dims
        ]
    )
    bw = np.maximum(bw, floors)
    for j, dim in enumerate(dims):
        if dim.categories:  # λ <= (c - 1) / c keeps the observed category the likeliest
            c = max(dim.categories, 2)
            bw[j] = min(bw[j], (c - 1) / c)
    out: NDArray[np.float64] = bw
    return out


class BOHBSampler:
    """BOHB's configuration sampler over hbd's parameter kinds (see the module doc)."""

    def __init__(
        self, params: Mapping[str, Param], *, seed: int, settings: BOHBSettings | None = None
    ) -> None:
        self.params = dict(params)
        self.seed = seed
        self.settings = settings or BOHBSettings()
        self._names = list(self.params)
        self._dims = [_dimension(p) for p in self.params.values()]
        self.min_points = self.settings.min_points_in_model or len(self._dims) + 1
        # The last history and its model: a bracket proposes all its first
        # configurations from one history, and fitting is what costs.
        self._cache: tuple[tuple[RunResult, ...], tuple[_KDE, _KDE] | None] | None = None
        # The last bracket's proposals so far (constant_liar), by index; None: random.
        self._proposed: tuple[tuple[int, tuple[RunResult, ...]], list[_Row | None]] | None = None

    def _rng(self, bracket: int, index: int) -> np.random.Generator:
        import numpy as np

        if bracket < 0 or index < 0:
            raise ValueError(f"bracket and index must be >= 0, got {bracket}, {index}")
        key = [self.seed % 2**64, bracket, index, _MODEL_STREAM, len(self._dims)]
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))

    def propose(
        self, *, bracket: int, index: int, history: Sequence[RunResult]
    ) -> dict[str, JSONValue]:
        row = self._row(bracket, index, history)
        return self._random(bracket, index) if row is None else self._decode(row)

    def _row(self, bracket: int, index: int, history: Sequence[RunResult]) -> _Row | None:
        """The encoded proposal (bracket, index); None: the random sampler's."""
        rng = self._rng(bracket, index)
        if not self._dims or rng.random() < self.settings.random_fraction:
            return None
        model = self._cached_model(history)
        if model is None:
            return None
        good, bad = model
        if self.settings.constant_liar:
            # All of a bracket's proposals see one history, so without this
            # they crowd around the same good points; as if each earlier one
            # had ended badly, the next ones look elsewhere.
            liars = [row for row in self._earlier(bracket, index, history) if row is not None]
            if liars:
                bad = bad.adding(liars)
        return self._best_candidate(rng, good, bad)

    def _earlier(self, bracket: int, index: int, history: Sequence[RunResult]) -> list[_Row | None]:
        """The bracket's proposals 0 .. index-1 (a pure function of the same
        arguments, so kept: a bracket proposes in index order, each once)."""
        key = (bracket, tuple(history))
        if self._proposed is None or self._proposed[0] != key:
            self._proposed = (key, [])
        rows = self._proposed[1]
        while len(rows) < index:
            rows.append(self._row(bracket, len(rows), history))
        return rows[:index]

    def _random(self, bracket: int, index: int) -> dict[str, JSONValue]:
        return sample_config(self.params, seed=self.seed, bracket=bracket, index=index)

    # ---- fitting

    def _cached_model(self, history: Sequence[RunResult]) -> tuple[_KDE, _KDE] | None:
        key = tuple(history)
        # Tuple equality checks identity first, so a repeated history costs
        # one pointer comparison per result; a reordered one is refitted (the
        # model is canonical, so to the same result).
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._model(key))
        return self._cache[1]

    def _encode(self, config: Mapping[str, JSONValue]) -> list[float] | None:
        row = []
        for name, dim in zip(self._names, self._dims, strict=True):
            if name not in config:
                return None
            u = dim.encode(config[name])
            if u is None:
                return None
            row.append(u)
        return row

    def _model(self, history: Sequence[RunResult]) -> tuple[_KDE, _KDE] | None:
        import numpy as np

        by_resource: dict[float, list[tuple[float, list[float]]]] = {}
        for r in history:
            row = self._encode(r.config)
            loss = r.loss if r.loss is not None and math.isfinite(r.loss) else math.inf
            if row is not None and math.isfinite(r.resource):
                by_resource.setdefault(float(r.resource), []).append((loss, row))
        m, p = self.min_points, self.settings.top_n_percent
        for resource in sorted(by_resource, reverse=True):
            # Canonical order: the history's order (completion order) never matters.
            points = sorted(by_resource[resource])
            n = len(points)
            n_good = max(m, p * n // 100)
            if n - n_good < m:
                continue
            good = [row for _, row in points[:n_good][:MAX_MODEL_POINTS]]
            bad = [row for _, row in points[n_good:][:MAX_MODEL_POINTS]]
            g = np.array(good, dtype=float)
            b = np.array(bad, dtype=float)
            s = self.settings.min_bandwidth
            joint = self.settings.multivariate
            return (
                _KDE(g, _bandwidths(g, self._dims, s, joint), joint),
                _KDE(b, _bandwidths(b, self._dims, s, joint), joint),
            )
        return None

    # ---- proposing

    def _best_candidate(self, rng: np.random.Generator, good: _KDE, bad: _KDE) -> list[float]:
        import numpy as np

        m, d = self.settings.num_samples, len(self._dims)
        categories = np.array([dim.categories for dim in self._dims], dtype=np.int64)
        if good.joint:  # each candidate around one good point
            centre = good.data[rng.integers(len(good.data), size=m)]  # (m, d)
        else:  # each coordinate around its own good point's
            pick = rng.integers(len(good.data), size=(m, d))
            centre = good.data[pick, np.arange(d)]
        cand = np.empty((m, d))
        for j, dim in enumerate(self._dims):
            bw = float(good.bandwidth[j])
            if dim.categories:
                assert isinstance(dim, _Categorical)
                keep = rng.random(m) < 1 - bw
                other = np.array(dim.allowed)[rng.integers(len(dim.allowed), size=m)]
                cand[:, j] = np.where(keep, centre[:, j], other)
            else:
                cand[:, j] = _truncated_normal(
                    rng, centre[:, j], bw * self.settings.bandwidth_factor
                )
                if isinstance(dim, _Grid):
                    cand[:, j] = [dim.snap(float(u)) for u in cand[:, j]]
        score = good.log_density(cand, categories) - bad.log_density(cand, categories)
        best = int(np.argmax(score))  # the first of equal scores: deterministic
        return [float(u) for u in cand[best]]

    def _decode(self, row: Sequence[float]) -> dict[str, JSONValue]:
        return {
            name: dim.decode(u) for name, dim, u in zip(self._names, self._dims, row, strict=True)
        }


def _truncated_normal(
    rng: np.random.Generator, mean: NDArray[np.float64], sd: float
) -> NDArray[np.float64]:
    """Normal(mean, sd) draws conditioned on [0, 1], by rejection (BOHB: scipy truncnorm)."""
    import numpy as np

    out = mean + sd * rng.standard_normal(mean.shape)
    for _ in range(MAX_REJECTION_ROUNDS):
        bad = (out < 0) | (out > 1)
        if not bad.any():
            break
        out[bad] = mean[bad] + sd * rng.standard_normal(int(bad.sum()))
    result: NDArray[np.float64] = np.clip(out, 0.0, 1.0)
    return result
