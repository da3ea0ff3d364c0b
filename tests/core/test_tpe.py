"""BOHB's model-based sampler: determinism, domains of every kind, and that the model helps."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from datetime import date, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from hbd.core.params import Param
from hbd.core.space import sample_config, value_bounds
from hbd.core.tpe import BOHBSampler, BOHBSettings, RunResult
from tests.core.helpers import BOHB_OLD_DEFAULTS, BOHB_SECOND_DEFAULTS, BOHB_THIRD_DEFAULTS

PARAM = TypeAdapter(Param)


def p(kind: str, value: Any) -> Any:
    return PARAM.validate_python({"kind": kind, "value": value})


# One parameter of every kind hbd has.
EVERY_KIND = {
    "u": p("uniform", [-1, 2]),
    "lu": p("loguniform", [-9.2, -2.3]),
    "qu": p("quniform", [0, 10, 0.5]),
    "qui": p("quniform", [1, 9, 2]),
    "qlu": p("qloguniform", [0, 4, 1]),
    "n": p("normal", [0.9, 0.05]),
    "ln": p("lognormal", [0, 1]),
    "qn": p("qnormal", [0, 3, 1]),
    "qln": p("qlognormal", [0, 1, 0.5]),
    "r": p("range", [1, 10, 2]),
    "rf": p("range", [0, 1, 0.1]),
    "lin": p("linspace", [0, 1, 5]),
    "log": p("logspace", [-3, 0, 4]),
    "geo": p("geomspace", [-1000, -1, 4]),
    "c": p("choice", [0.25, "relu", [1, 2], {"a": 1}, True, 1]),
    "pc": p("pchoice", [["relu", 0.5], ["tanh", 0.0], ["gelu", 0.5]]),
    "d": p("daterange", ["2024-01-01", "2024-02-01", 3]),
    "dt": p("datetimerange", ["2024-01-01T00:00:00", "2024-01-02T00:00:00", 3600]),
}
NO_RANDOM = BOHBSettings(random_fraction=0)


def random_history(params: dict[str, Any], n: int, seed: int = 1) -> list[RunResult]:
    """n random configurations at resources 1 and 3 with arbitrary losses (some failed)."""
    out = []
    for i in range(n):
        cfg = sample_config(params, seed=seed, bracket=9, index=i)
        loss = None if i % 7 == 3 else math.sin(i * 1.7)
        out.append(RunResult(config=cfg, resource=1 if i % 3 else 3, loss=loss))
    return out


def in_domain(param: Any, value: Any, name: str) -> None:
    """value is one the random sampler could give: right type, grid, bounds, category."""
    reference = [sample_config({name: param}, seed=0, bracket=0, index=i)[name] for i in range(3)]
    kind = param.kind
    if kind in ("choice", "pchoice"):
        allowed = param.value if kind == "choice" else [x for x, w in param.value if w > 0]
        assert any(json.dumps(value) == json.dumps(a) for a in allowed), (name, value)
        return
    if kind == "daterange":
        d = date.fromisoformat(value)
        assert param.value.start <= d < param.value.stop
        assert (d - param.value.start).days % param.value.step == 0
        return
    if kind == "datetimerange":
        t = datetime.fromisoformat(value)
        assert param.value.start <= t < param.value.stop
        assert (t - param.value.start).total_seconds() % param.value.step == 0
        return
    assert type(value) is type(reference[0]), (name, value, reference)
    assert math.isfinite(value)
    bounds = value_bounds(param)
    if bounds is not None:
        assert bounds[0] <= value <= bounds[1], (name, value, bounds)
    if kind == "uniform":
        assert value < param.value.high  # [low, high), as numpy draws
    v = param.value
    if kind in ("range",):
        assert value in [v.at(i) for i in range(v.size)]
    if kind in ("linspace", "logspace", "geomspace"):
        assert value in [v.at(i) for i in range(v.num)]
    if kind in ("quniform", "qloguniform", "qnormal", "qlognormal"):
        k = round(value / float(v.q))
        assert value == v.at(k), (name, value)


# ---------------------------------------------------------------- no model: random


def test_without_history_the_proposal_is_the_random_samplers() -> None:
    sampler = BOHBSampler(EVERY_KIND, seed=5, settings=NO_RANDOM)
    for bracket, index in [(0, 0), (3, 17), (1, 2)]:
        got = sampler.propose(bracket=bracket, index=index, history=[])
        assert got == sample_config(EVERY_KIND, seed=5, bracket=bracket, index=index)


def test_too_few_points_at_every_resource_is_random() -> None:
    params = {"x": p("uniform", [0, 1]), "y": p("uniform", [0, 1])}
    sampler = BOHBSampler(params, seed=3, settings=NO_RANDOM)  # needs 3 good + 3 bad
    history = random_history(params, 5)  # at most 4 at a resource
    assert sampler.propose(bracket=0, index=1, history=history) == sample_config(
        params, seed=3, bracket=0, index=1
    )
    history = random_history(params, 12)  # 8 at resource 1: a model
    assert sampler.propose(bracket=0, index=1, history=history) != sample_config(
        params, seed=3, bracket=0, index=1
    )


def test_the_random_fraction_is_about_its_share() -> None:
    params = {"x": p("uniform", [0, 1])}
    history = random_history(params, 40)
    sampler = BOHBSampler(params, seed=11, settings=BOHBSettings(random_fraction=0.25))
    random = sum(
        sampler.propose(bracket=0, index=i, history=history)
        == sample_config(params, seed=11, bracket=0, index=i)
        for i in range(400)
    )
    assert 60 <= random <= 140  # 100 expected; binomial sd 8.7


# ---------------------------------------------------------------- determinism and domains


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**64 + 5),
    bracket=st.integers(0, 6),
    index=st.integers(0, 200),
    n=st.integers(0, 60),
    order=st.randoms(use_true_random=False),
    multivariate=st.booleans(),
)
def test_a_permuted_history_gives_the_same_proposal_inside_every_domain(
    seed: int, bracket: int, index: int, n: int, order: Any, multivariate: bool
) -> None:
    sampler = BOHBSampler(
        EVERY_KIND,
        seed=seed,
        settings=BOHBSettings(min_points_in_model=3, multivariate=multivariate),
    )
    history = random_history(EVERY_KIND, n, seed=seed % 1000)
    shuffled = list(history)
    order.shuffle(shuffled)
    got = sampler.propose(bracket=bracket, index=index, history=history)
    assert sampler.propose(bracket=bracket, index=index, history=shuffled) == got
    assert list(got) == list(EVERY_KIND)
    for name, value in got.items():
        in_domain(EVERY_KIND[name], value, name)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**64 + 5),
    asks=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 30)), min_size=1, max_size=12),
    n=st.integers(8, 40),
    multivariate=st.booleans(),
)
def test_a_proposal_does_not_depend_on_what_was_asked_before(
    seed: int, asks: list[tuple[int, int]], n: int, multivariate: bool
) -> None:
    """constant_liar makes a proposal depend on its bracket's earlier ones; they
    are recomputed, not remembered, so one sampler asked in any order (brackets
    interleaved, indices skipped or repeated) answers as a fresh one does."""
    settings_ = BOHBSettings(min_points_in_model=2, multivariate=multivariate)
    params = {k: EVERY_KIND[k] for k in ("u", "qu", "r", "c")}
    history = random_history(params, n, seed=seed % 1000)
    one = BOHBSampler(params, seed=seed, settings=settings_)
    for bracket, index in asks:
        fresh = BOHBSampler(params, seed=seed, settings=settings_)
        expected = fresh.propose(bracket=bracket, index=index, history=history)
        assert one.propose(bracket=bracket, index=index, history=history) == expected


def test_a_brackets_earlier_proposals_count_as_bad() -> None:
    """All of a bracket's proposals are drawn from one history: without the
    liar they pile onto the single best category; with it (Optuna's
    constant_liar) each earlier one makes its place look worse, so the next
    ones spread to the other good category and across x."""
    params = {"c": p("choice", ["a", "b", "c", "d"]), "x": p("uniform", [0, 1])}
    history = [
        RunResult(config={"c": c, "x": x}, resource=1, loss=loss)
        for c, loss in [("a", 0.0), ("b", 0.01), ("c", 1.0), ("d", 1.0)]
        for x in (0.1, 0.3, 0.5, 0.7, 0.9)
    ]  # the good set (top 40%): the five a's and three b's

    def bracket(constant_liar: bool) -> list[dict[str, Any]]:
        settings_ = BOHBSettings(
            random_fraction=0, min_points_in_model=2, top_n_percent=40, constant_liar=constant_liar
        )
        sampler = BOHBSampler(params, seed=1, settings=settings_)
        return [sampler.propose(bracket=0, index=i, history=history) for i in range(30)]

    alone, liar = bracket(False), bracket(True)
    assert [x["c"] for x in alone].count("a") == 30
    assert 5 <= [x["c"] for x in liar].count("b") < 15  # spread, still mostly the best
    assert {x["c"] for x in liar} <= {"a", "b"}
    assert statistics.pstdev(x["x"] for x in liar) > 2 * statistics.pstdev(x["x"] for x in alone)
    # The first proposal has nothing earlier: the same either way.
    assert liar[0] == alone[0]


def test_the_liars_never_grow_the_bad_density_past_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hbd.core.tpe as tpe

    monkeypatch.setattr(tpe, "MAX_MODEL_POINTS", 12)
    params = {"x": p("uniform", [0, 1])}
    sampler = BOHBSampler(params, seed=0, settings=BOHBSettings(random_fraction=0))
    model = sampler._model(quadratic_history(40, 1, best=0.5))
    assert model is not None
    _, bad = model
    assert len(bad.data) == 12
    more = bad.adding([[0.5]] * 30)
    assert len(more.data) == 12
    assert (more.data == bad.data).all()  # the bad results are kept, not the liars
    assert (more.bandwidth == bad.bandwidth).all()


@pytest.mark.parametrize("multivariate", [True, False])
def test_model_proposals_stay_inside_every_domain(multivariate: bool) -> None:
    # Many model-driven proposals (no random share), so edges and rounding are exercised.
    sampler = BOHBSampler(
        EVERY_KIND,
        seed=2,
        settings=BOHBSettings(random_fraction=0, min_points_in_model=3, multivariate=multivariate),
    )
    history = random_history(EVERY_KIND, 60)
    for i in range(60):
        got = sampler.propose(bracket=1, index=i, history=history)
        for name, value in got.items():
            in_domain(EVERY_KIND[name], value, name)


def test_foreign_or_malformed_history_is_ignored() -> None:
    params = {"x": p("uniform", [0, 1]), "c": p("choice", ["a", "b"])}
    sampler = BOHBSampler(params, seed=1, settings=NO_RANDOM)
    junk = [
        RunResult(config={"x": "nope", "c": "a"}, resource=1, loss=0.0),
        RunResult(config={"x": 0.5}, resource=1, loss=0.0),  # a parameter missing
        RunResult(config={"x": 0.5, "c": "zzz"}, resource=1, loss=0.0),
        RunResult(config={"x": True, "c": "a"}, resource=1, loss=0.0),
        RunResult(config={"x": 0.5, "c": "a"}, resource=math.nan, loss=0.0),
    ] * 10
    assert sampler.propose(bracket=0, index=0, history=junk) == sample_config(
        params, seed=1, bracket=0, index=0
    )


# ---------------------------------------------------------------- the model helps


def quadratic_history(n: int, resource: float, best: float) -> list[RunResult]:
    params = {"x": p("uniform", [0, 1])}
    out = []
    for i in range(n):
        x = sample_config(params, seed=99, bracket=int(resource), index=i)["x"]
        assert isinstance(x, float)
        out.append(RunResult(config={"x": x}, resource=resource, loss=(x - best) ** 2))
    return out


@pytest.mark.parametrize("multivariate", [True, False])
def test_proposals_concentrate_where_the_losses_are_low(multivariate: bool) -> None:
    settings = BOHBSettings(random_fraction=0, multivariate=multivariate)
    sampler = BOHBSampler({"x": p("uniform", [0, 1])}, seed=4, settings=settings)
    history = quadratic_history(40, 1, best=0.8)
    xs = [sampler.propose(bracket=0, index=i, history=history)["x"] for i in range(50)]
    near = sum(abs(x - 0.8) < 0.15 for x in xs if isinstance(x, float))
    assert near >= 35  # random would put 30% there


def test_the_largest_resource_with_enough_points_wins() -> None:
    sampler = BOHBSampler({"x": p("uniform", [0, 1])}, seed=4, settings=NO_RANDOM)
    low = quadratic_history(60, 1, best=0.1)
    high = quadratic_history(20, 9, best=0.9)
    too_few = quadratic_history(3, 27, best=0.5)
    history = low + high + too_few
    xs = [sampler.propose(bracket=0, index=i, history=history)["x"] for i in range(30)]
    assert sum(x > 0.6 for x in xs if isinstance(x, float)) >= 24


def test_failed_runs_count_as_the_worst() -> None:
    params = {"c": p("choice", ["good", "bad", "fails"])}
    history = [
        RunResult(config={"c": c}, resource=1, loss=loss)
        for c, loss in [("good", 0.0), ("bad", 1.0), ("fails", None)]
        for _ in range(6)
    ]
    sampler = BOHBSampler(
        params, seed=0, settings=BOHBSettings(random_fraction=0, top_n_percent=30)
    )
    picks = [sampler.propose(bracket=0, index=i, history=history)["c"] for i in range(30)]
    assert picks.count("good") >= 25
    assert picks.count("fails") == 0


def test_the_good_density_is_the_best_tenth_but_at_least_four_points() -> None:
    """Today's split (Optuna's share): the best 10% of a resource's results, at
    least min_points_in_model (4); BOHB's (15%, at least d + 1) took a third of
    Hartmann6's top resource after two iterations (BOHBSettings says why)."""
    params = {f"x{i}": p("uniform", [0, 1]) for i in range(6)}

    def good_points(n: int, settings_: BOHBSettings) -> int:
        history = [
            RunResult(config=sample_config(params, seed=0, bracket=0, index=i), resource=9, loss=i)
            for i in range(n)
        ]
        model = BOHBSampler(params, seed=0, settings=settings_)._model(history)
        assert model is not None
        return len(model[0].data)

    today = BOHBSettings()
    second = BOHBSettings.model_validate(BOHB_SECOND_DEFAULTS)
    assert [good_points(n, today) for n in (8, 20, 50, 90)] == [4, 4, 5, 9]
    assert [good_points(n, second) for n in (14, 20, 50, 90)] == [7, 7, 7, 13]
    model = BOHBSampler(params, seed=0, settings=today)._model(
        [
            RunResult(config=sample_config(params, seed=0, bracket=0, index=i), resource=9, loss=i)
            for i in range(7)
        ]
    )
    assert model is None  # 4 good and 3 bad: too few bad ones


def test_a_zero_weight_pchoice_value_is_never_proposed() -> None:
    params = {"c": p("pchoice", [["a", 0.5], ["never", 0.0], ["b", 0.5]])}
    history = [
        RunResult(config={"c": c}, resource=1, loss=loss)
        for c, loss in [("a", 1.0), ("b", 0.0)]
        for _ in range(8)
    ]
    sampler = BOHBSampler(params, seed=0, settings=NO_RANDOM)
    picks = {sampler.propose(bracket=0, index=i, history=history)["c"] for i in range(100)}
    assert picks <= {"a", "b"}
    assert "b" in picks


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("topNPercent", 0, "greater than or equal to 1"),
        ("top_n_percent", 100, "less than or equal to 99"),
        ("randomFraction", 1.5, "less than or equal to 1"),
        ("numSamples", 0, "greater than or equal to 1"),
        ("numSamples", 10**9, "less than or equal to 4096"),
        ("bandwidthFactor", 0, "greater than 0"),
        ("minBandwidth", math.nan, "finite number"),
        ("bandwidthFactor", math.inf, "finite number"),
        ("minPointsInModel", 1, "greater than or equal to 2"),
        ("bogus", 1, "Extra inputs are not permitted"),
        # A bool is not a number (Python counts True as 1) nor 1 or "yes" a bool.
        ("topNPercent", True, "expected a number, got True"),
        ("minBandwidth", True, "expected a number, got True"),
        ("numSamples", False, "expected a number, got False"),
        ("randomFraction", True, "expected a number, got True"),
        ("minPointsInModel", True, "expected a number, got True"),
        ("bandwidthFactor", True, "expected a number, got True"),
        ("multivariate", 1, "valid boolean"),
        ("multivariate", "yes", "valid boolean"),
        ("constantLiar", 1, "valid boolean"),
        ("constantLiar", "false", "valid boolean"),
    ],
)
def test_settings_are_validated_with_the_field_named(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        BOHBSettings.model_validate({field: value})
    errors = info.value.errors()
    assert len(errors) == 1
    assert message in str(info.value)


def test_settings_take_polyaxons_camel_case_and_the_measured_defaults() -> None:
    s = BOHBSettings.model_validate({"topNPercent": 20, "randomFraction": 0})
    assert (s.top_n_percent, s.random_fraction, s.num_samples) == (20, 0, 24)
    d = BOHBSettings()
    assert d.bandwidth_factor == 3.0
    # The six that differ from BOHB's (the class doc says why, bench/quality.py measures it).
    assert (d.multivariate, d.min_bandwidth) == (False, 0.02)
    assert (d.top_n_percent, d.min_points_in_model, d.num_samples) == (10, 4, 24)
    # And one that is not BOHB's: a bracket's earlier proposals as liars, in
    # place of the random share.
    assert (d.constant_liar, d.random_fraction) == (True, 0.0)


@pytest.mark.parametrize("recorded", [BOHB_OLD_DEFAULTS, BOHB_SECOND_DEFAULTS, BOHB_THIRD_DEFAULTS])
def test_a_sweep_recorded_with_the_old_defaults_replays_with_them(
    recorded: dict[str, object],
) -> None:
    """Each field the record has is kept; one it lacks (constant_liar, added
    since) takes the value the sweep ran with, not today's default."""
    from hbd.core.search import Search

    record = {
        "sampler": "bohb",
        "settings": recorded,
        "promotion": "synchronous",
        "lazy": True,
        "iterations": 1,
    }
    old = Search.from_json(record).make_sampler(EVERY_KIND, seed=3)
    assert isinstance(old, BOHBSampler)
    assert old.settings == BOHBSettings.model_validate({**recorded, "constant_liar": False})
    assert BOHBSettings().constant_liar
    today = Search.from_json({**record, "settings": BOHBSettings().model_dump(mode="json")})
    history = random_history(EVERY_KIND, 60)
    proposals = [
        (s.propose(bracket=0, index=i, history=history))
        for i in range(20)
        for s in (old, today.make_sampler(EVERY_KIND, seed=3))
    ]
    assert proposals[0::2] != proposals[1::2]  # the settings reach the model
    again = Search.from_json(record).make_sampler(EVERY_KIND, seed=3)
    assert [again.propose(bracket=0, index=i, history=history) for i in range(20)] == proposals[
        0::2
    ]


def test_identical_good_points_keep_the_bandwidth_floor_in_every_kind() -> None:
    """When every good point agrees (its spread is 0), each parameter's bandwidth
    is the floor: min_bandwidth, a grid's half cell if wider, a category's λ."""
    centre = sample_config(EVERY_KIND, seed=0, bracket=0, index=0)
    history = [RunResult(config=centre, resource=1, loss=0.0)] * 20 + [
        RunResult(config=sample_config(EVERY_KIND, seed=1, bracket=1, index=i), resource=1, loss=1)
        for i in range(40)
    ]
    floor = BOHBSettings().min_bandwidth
    sampler = BOHBSampler(EVERY_KIND, seed=0, settings=BOHBSettings(random_fraction=0))
    model = sampler._model(history)
    assert model is not None
    good, _ = model
    assert (good.data == good.data[0]).all()  # the good set is the centre only
    for name, dim, bw in zip(EVERY_KIND, sampler._dims, good.bandwidth, strict=True):
        n = getattr(dim, "n", 0)
        assert bw == pytest.approx(max(floor, 0.5 / n) if n else floor), name


@pytest.mark.parametrize("name", ["u", "lu", "n", "ln"])
def test_the_floor_keeps_a_collapsed_model_searching_around_its_point(name: str) -> None:
    """Proposals around identical good points spread with the floor: today's
    (0.02) moves them about 20 times farther than BOHB's 0.001, which froze a
    sweep in the first basin it found (bench/quality.py)."""
    params = {name: EVERY_KIND[name]}
    centre = sample_config(params, seed=0, bracket=0, index=0)
    history = [RunResult(config=centre, resource=1, loss=0.0)] * 10 + [
        RunResult(config=sample_config(params, seed=1, bracket=1, index=i), resource=1, loss=1.0)
        for i in range(30)
    ]

    def spread(min_bandwidth: float) -> float:
        settings_ = BOHBSettings(random_fraction=0, min_bandwidth=min_bandwidth)
        sampler = BOHBSampler(params, seed=6, settings=settings_)
        dim = sampler._dims[0]
        u0 = dim.encode(centre[name])
        assert u0 is not None
        out = []
        for i in range(60):
            u = dim.encode(sampler.propose(bracket=0, index=i, history=history)[name])
            assert u is not None
            out.append(abs(u - u0))
        return statistics.median(out)

    assert spread(BOHBSettings().min_bandwidth) > 8 * spread(0.001)


def test_importing_the_sampler_does_not_import_numpy() -> None:
    code = "import sys, hbd.core.tpe; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_chunked_kernels_give_the_same_proposal(monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"x": p("uniform", [0, 1]), "c": p("choice", ["a", "b", "c"])}
    history = random_history(params, 80)
    settings_ = BOHBSettings(random_fraction=0, num_samples=200)
    whole = BOHBSampler(params, seed=8, settings=settings_).propose(
        bracket=0, index=0, history=history
    )
    import hbd.core.tpe as tpe

    monkeypatch.setattr(tpe, "KERNEL_CELLS", 7)  # one candidate at a time
    chunked = BOHBSampler(params, seed=8, settings=settings_).propose(
        bracket=0, index=0, history=history
    )
    assert chunked == whole


@pytest.mark.parametrize("multivariate", [True, False])
def test_the_largest_bandwidth_floor_proposes_without_a_numpy_warning(multivariate: bool) -> None:
    # min_bandwidth 1 is allowed: a continuous parameter's bandwidth is then 1,
    # and the categorical kernel's log(1 - 1) must not be computed for it
    # (numpy's RuntimeWarning is an error under pytest, and noise in the daemon).
    params = {"u": p("uniform", [0, 1]), "c": p("choice", ["a", "b", "c"])}
    settings = BOHBSettings(
        random_fraction=0, min_points_in_model=2, min_bandwidth=1.0, multivariate=multivariate
    )
    sampler = BOHBSampler(params, seed=1, settings=settings)
    history = random_history(params, 20)
    got = sampler.propose(bracket=0, index=0, history=history)
    for name, value in got.items():
        in_domain(params[name], value, name)
