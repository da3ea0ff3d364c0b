"""`hbd export SWEEP --optuna-journal FILE`: a real finished sweep, read back with Optuna."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

import hbd
from hbd.cli import main
from hbd.export.optuna_journal import intermediate_values
from tests.live_daemon import curve_yaml, daemon_in_thread

TOKEN = "export-test-token-0123456789"


def hbd_cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HBD_TOKEN": TOKEN, "HBD_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "hbd", *args], env=env, capture_output=True, text=True, timeout=120
    )


def load(path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))


@pytest.mark.slow
def test_a_finished_sweep_reads_back_in_optuna_with_its_curves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HBD_TOKEN", TOKEN)
    journal = tmp_path / "sweep.journal"
    with daemon_in_thread(tmp_path, token=TOKEN) as url, hbd.Client(url, token=TOKEN) as client:
        # x above 0.8 fails: the journal holds failed runs too.
        sweep = client.submit(curve_yaml(fail_above=0.8, seed=3))
        client.wait(sweep, timeout=90)
        runs = {t["id"]: t for t in client.trials(sweep)}
        done = hbd_cli("export", sweep, "--optuna-journal", str(journal), url=url)
        assert done.returncode == 0, done.stderr
        assert f"wrote {len(runs)} trial runs of sweep {sweep}" in done.stdout
        assert "optuna-dashboard" in done.stdout

        # The same command in this process (importing Optuna again costs seconds).
        assert main(["export", sweep, "--optuna-journal", str(journal), "--url", url]) == 2
        assert "exists" in capsys.readouterr().err
        assert (
            main(["export", sweep, "--optuna-journal", str(journal), "--force", "--url", url]) == 0
        )
        assert main(["export", "nope", "--optuna-journal", str(tmp_path / "x"), "--url", url]) == 2
        assert "no sweep nope" in capsys.readouterr().err
        assert not (tmp_path / "x").exists()

    study = load(journal, sweep)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.user_attrs["hbd_sweep_id"] == sweep
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == len(runs)
    failed = [r for r in runs.values() if r["status"] == "failed"]
    assert failed, "the spec should make some trials fail"
    assert sum(t.state == TrialState.FAIL for t in trials) == len(failed)
    curve_points = 0
    for t in trials:
        run = runs[t.user_attrs["hbd_trial_id"]]
        assert t.params == run["config"]
        assert (t.user_attrs["bracket"], t.user_attrs["rung"]) == (run["bracket"], run["rung"])
        assert t.user_attrs["steps"] == run["resource"]
        assert t.datetime_start is not None and t.datetime_complete is not None
        if run["status"] == "succeeded":
            assert t.state == TrialState.COMPLETE
            assert math.isclose(t.value, run["metric"])
            # The trial reports loss = floor + 1/step at every step up to its
            # resource (the daemon hears of most: callbacks are best effort).
            r = run["resource"]
            assert t.intermediate_values and set(t.intermediate_values) <= set(range(1, r + 1))
            for step, loss in t.intermediate_values.items():
                assert math.isclose(loss, run["metric"] - 1 / r + 1 / step), (step, loss)
            curve_points += len(t.intermediate_values)
        else:
            assert t.value is None and not t.intermediate_values
    succeeded = [r for r in runs.values() if r["status"] == "succeeded"]
    assert curve_points > sum(r["resource"] for r in succeeded) // 2  # curves, not just ends
    dists = trials[0].distributions
    assert dists["opt"] == CategoricalDistribution(("sgd", "adam"))
    assert dists["x"] == FloatDistribution(0.0, 1.0)  # the spec's uniform [0, 1]
    assert dists["width"] == IntDistribution(8, 56)  # range(8, 64, 8)
    best = min((r for r in runs.values() if r["metric"] is not None), key=lambda r: r["metric"])
    assert study.best_trial.user_attrs["hbd_trial_id"] == best["id"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".sweep.journal")] == []


def test_without_optuna_the_command_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now fails
    code = main(["export", "sw1", "--optuna-journal", str(tmp_path / "j"), "--url", "http://h:1"])
    assert code == 2
    assert "pip install optuna" in capsys.readouterr().err
    assert not (tmp_path / "j").exists()


def test_intermediate_steps_come_from_step_else_the_report_number() -> None:
    reports = [
        {"seq": 1, "metrics": {"loss": 3.0}},
        {"seq": 2, "metrics": {"loss": 2.0, "step": 10}},
        {"seq": 3, "metrics": {"loss": 1.5, "step": 10}},  # the same step again: the later wins
        {"seq": 4, "metrics": {"loss": 1.0, "step": 2.5}},  # not a whole step: its number
        {"seq": 5, "metrics": {"acc": 0.9}},  # not the metric
        {"seq": 6, "metrics": {"loss": 0.5, "step": 2**70}},  # no int64 step: its number
        {"seq": 7, "metrics": {"loss": float("nan")}},
    ]
    assert intermediate_values("loss", reports) == {1: 3.0, 10: 1.5, 4: 1.0, 6: 0.5}


def trial_view(
    i: int, config: dict[str, object], status: str, metric: float | None
) -> dict[str, Any]:
    return {
        "id": f"sw-s0-r0-c{i}",
        "sweep_id": "sw",
        "bracket": 0,
        "rung": 0,
        "index": i,
        "config": config,
        "resource": 3,
        "status": status,
        "metric": metric,
        "metrics": {} if metric is None else {"acc": metric},
        "parent": None,
        "reason": None if status == "succeeded" else status,
        "scheduled_at": 1_800_000_000.0 + i,
        "started_at": 1_800_000_001.0 + i,
        "ended_at": None if status == "running" else 1_800_000_002.5 + i,
    }


def test_every_kind_of_value_gets_a_distribution_that_holds_it() -> None:
    from hbd.export.optuna_journal import SweepData, fill_study

    params = {
        "lr": {"kind": "loguniform", "value": {"low": -9.2, "high": -2.3}},
        "layers": {"kind": "choice", "value": [16, 32, [1, 2]]},
        "act": {"kind": "pchoice", "value": [["relu", 0.5], ["tanh", 0.5]]},
        "day": {"kind": "daterange", "value": {"start": "2024-01-01", "stop": "2024-02-01"}},
        "n": {"kind": "range", "value": {"start": 1, "stop": 9, "step": 2}},
        "noise": {"kind": "qnormal", "value": {"loc": 0, "scale": 1, "q": 0.5}},
        "flag": {"kind": "choice", "value": [True, False]},
    }
    configs = [
        {
            "lr": 0.001,
            "layers": [1, 2],
            "act": "tanh",
            "day": "2024-01-03",
            "n": 3,
            "noise": -0.5,
            "flag": True,
        },
        {
            "lr": 0.05,
            "layers": 16,
            "act": "relu",
            "day": "2024-01-09",
            "n": 7,
            "noise": 1.0,
            "flag": False,
        },
        {
            "lr": 0.01,
            "layers": 32,
            "act": "relu",
            "day": "2024-01-05",
            "n": 1,
            "noise": 0.0,
            "flag": True,
        },
        {
            "lr": 0.02,
            "layers": 16,
            "act": "tanh",
            "day": "2024-01-07",
            "n": 5,
            "noise": 0.5,
            "flag": False,
        },
        {
            "lr": 0.03,
            "layers": 16,
            "act": "tanh",
            "day": "2024-01-02",
            "n": 5,
            "noise": 0.5,
            "flag": True,
        },
    ]
    statuses = [
        ("succeeded", 0.9),
        ("failed", None),
        ("cancelled", None),
        ("succeeded", None),
        ("running", None),
    ]
    trials = [
        trial_view(i, c, *st) for i, (c, st) in enumerate(zip(configs, statuses, strict=True))
    ]
    detail = {
        "id": "sw",
        "metric": {"name": "acc", "optimization": "maximize"},
        "resource": {"name": "epochs", "type": "int"},
    }
    reports = {
        "sw-s0-r0-c0": [{"seq": 1, "metrics": {"acc": 0.5}}, {"seq": 2, "metrics": {"acc": 0.9}}]
    }
    study = fill_study(None, SweepData(detail, params, trials, reports))
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    got = study.get_trials(deepcopy=False)
    assert [t.state for t in got] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.PRUNED,
        TrialState.FAIL,  # succeeded without the metric: no value to rank
    ]  # the running one is left out
    d = got[0].distributions
    # The spec's range (exp of its exponents), widened to what was drawn, on a log axis.
    assert d["lr"] == FloatDistribution(math.exp(-9.2), math.exp(-2.3), log=True)
    assert d["layers"] == CategoricalDistribution((16, 32, "[1, 2]"))  # the spec's, lists as JSON
    assert d["act"] == CategoricalDistribution(("relu", "tanh"))
    assert isinstance(d["day"], CategoricalDistribution) and "2024-01-03" in d["day"].choices
    assert d["n"] == IntDistribution(1, 7)  # range(1, 9, 2): 1..7
    assert d["noise"] == FloatDistribution(-0.5, 1.0)
    assert d["flag"] == CategoricalDistribution((True, False))
    assert got[0].params["layers"] == "[1, 2]" and got[0].intermediate_values == {1: 0.5, 2: 0.9}
    assert got[0].duration is not None and got[0].duration.total_seconds() == 1.5


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("uniform", {"low": -1, "high": 2}, (-1.0, 2.0)),
        ("range", {"start": 10, "stop": 0, "step": -3}, (1.0, 10.0)),
        ("range", {"start": 0, "stop": 10, "step": 5}, (0.0, 5.0)),
        ("logspace", {"start": 0, "stop": 2, "num": 3}, (1.0, 100.0)),
        ("geomspace", {"start": 100, "stop": 1, "num": 3}, (1.0, 100.0)),
        ("normal", {"loc": 0, "scale": 1}, None),
        ("uniform", [0, 1], None),  # a form not normalised: use what was drawn
        ("range", {"start": 0, "stop": 1, "step": 0}, None),
        ("logspace", {"start": 0, "stop": 10**6, "num": 2}, None),  # overflows
    ],
)
def test_declared_ranges(kind: str, value: object, expected: tuple[float, float] | None) -> None:
    from hbd.export.optuna_journal import declared_range

    assert declared_range(kind, value) == expected
