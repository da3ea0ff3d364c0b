"""hbd.Client, the synchronous client for notebooks, against a real daemon."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hbd
from hbd.client import ClientError, SpecRejected
from tests.live_daemon import curve_spec, curve_yaml, daemon_in_thread

pytestmark = pytest.mark.slow
TOKEN = "test-token-0123456789abcdef"


def test_import_hbd_stays_light_and_client_is_lazy() -> None:
    code = (
        "import sys, hbd\n"
        "heavy = [m for m in ('httpx', 'pandas', 'fastapi', 'optuna', 'hbd.sync_client') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert hbd.Client.__module__ == 'hbd.sync_client'\n"
        "assert 'pandas' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_ships_py_typed() -> None:
    assert (Path(hbd.__file__).parent / "py.typed").is_file()


def test_a_sweep_from_submit_to_results_frame(tmp_path: Path) -> None:
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(curve_yaml())
    with daemon_in_thread(tmp_path, token=TOKEN) as url, hbd.Client(url, token=TOKEN) as client:
        sweep = client.submit(spec_file)
        assert client.submit(str(spec_file), sweep_id=None) != sweep  # a path as str works too
        as_json = json.dumps(curve_spec(seed=1))  # one long line of text, not a path
        assert client.submit(as_json, sweep_id="from-json") == "from-json"
        with pytest.raises(ClientError, match="no sweep") as missing_file:
            client.status("does-not-exist.yaml")
        assert missing_file.value.status == 404
        assert sweep in {s["id"] for s in client.sweeps()}
        final = client.wait(sweep, timeout=60)
        assert final["status"] == "succeeded"
        assert client.status(sweep)["best"]["id"] == final["best"]["id"]

        trials = client.trials(sweep)
        assert len(trials) == final["planned_trial_runs"] == 22
        assert len(client.trials(sweep, bracket=2, rung=0)) == 9

        results = client.results(sweep)
        assert results[0]["id"] == final["best"]["id"]
        metrics = [r["metric"] for r in results]
        assert metrics == sorted(metrics)

        events = list(client.events(sweep))
        assert events[0].type == "sweep.submitted" and events[-1].type == "sweep.finished"
        assert [e.seq for e in events] == sorted({e.seq for e in events})
        curves = list(client.events(sweep, types=["trial.metrics"], follow=False))
        assert curves.pop().type == "sweep.finished"  # a sweep's stream always shows its end
        assert {e.type for e in curves} == {"trial.metrics"}
        # One report per step; callbacks are best effort, so the log may miss a few.
        assert (
            sum(t["resource"] for t in trials) // 2
            < len(curves)
            <= sum(t["resource"] for t in trials)
        )

        frame = client.results_frame(sweep)
        assert len(frame) == 22
        for col in ("id", "bracket", "rung", "resource", "status", "metric", "duration"):
            assert col in frame.columns
        assert {"param.x", "param.opt", "param.width", "metric.loss", "metric.step"} <= set(
            frame.columns
        )
        row = frame.set_index("id").loc[final["best"]["id"]]
        assert math.isclose(row["metric.loss"], final["best"]["metric"])
        assert row["param.opt"] == final["best"]["config"]["opt"]
        assert (frame["duration"] > 0).all()
        assert str(frame["started_at"].dt.tz) == "UTC"

        study = client.optuna_study(sweep)  # in memory, for optuna.visualization
        assert study.study_name == sweep and len(study.trials) == 22
        assert study.best_trial.user_attrs["hbd_trial_id"] == final["best"]["id"]
        assert study.best_trial.params == final["best"]["config"]


def test_errors_are_one_line_client_errors(tmp_path: Path) -> None:
    with daemon_in_thread(tmp_path, token=TOKEN, slots=1) as url:
        with hbd.Client(url, token="wrong-token-0123456789") as bad:
            with pytest.raises(ClientError, match="refused the token") as info:
                bad.sweeps()
            assert info.value.status == 401
        with hbd.Client(url, token=TOKEN) as client:
            with pytest.raises(SpecRejected) as rejected:
                client.submit(
                    {"version": 1.1, "kind": "operation", "matrix": {"kind": "hyperband"}}
                )
            assert rejected.value.errors and rejected.value.status == 422
            with pytest.raises(ClientError, match="no sweep nope") as missing:
                client.status("nope")
            assert missing.value.status == 404
            with pytest.raises(ClientError, match="status") as bogus:
                client.trials("nope", status="bogus")
            assert bogus.value.status == 422 and "\n" not in str(bogus.value)
            spec = curve_spec(sleep=5.0)
            sweep = client.submit(spec)
            with pytest.raises(TimeoutError):
                client.wait(sweep, timeout=0.2)
            assert client.cancel(sweep) is True
            assert client.wait(sweep, timeout=30)["status"] == "stopped"
    with hbd.Client(url, token=TOKEN) as gone, pytest.raises(ClientError, match="cannot reach"):
        gone.sweeps()


def test_defaults_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("HBD_TOKEN", raising=False)
    monkeypatch.setenv("HBD_TOKEN_FILE", str(token_file))
    with daemon_in_thread(tmp_path, token=TOKEN, slots=1) as url:
        monkeypatch.setenv("HBD_URL", url)
        with hbd.Client() as client:
            assert client.url == url
            assert client.sweeps() == []


def test_results_frame_without_pandas_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[])

    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with hbd.Client("http://hbd.invalid", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ImportError, match="pip install pandas"):
            client.results_frame("sw1")


def test_the_readme_notebook_snippet_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Pictures and notebooks", 1)[1]
    snippet = section.split("```python", 1)[1].split("```", 1)[0]
    assert '"examples/sgd.yaml"' in snippet and (Path("examples/sgd.yaml")).is_file()
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(curve_yaml())  # the same, but seconds instead of minutes
    with daemon_in_thread(tmp_path, token=TOKEN) as url:
        monkeypatch.setenv("HBD_URL", url)
        monkeypatch.setenv("HBD_TOKEN", TOKEN)
        namespace: dict[str, object] = {}
        exec(snippet.replace('"examples/sgd.yaml"', repr(str(spec_file))), namespace)
        namespace["client"].close()  # type: ignore[attr-defined]
    assert len(namespace["df"]) == 22  # type: ignore[arg-type]
    printed = [ln for ln in capsys.readouterr().out.splitlines() if re.match(r"\d+ \d+ \[", ln)]
    assert len(printed) == 6  # R=9, eta=3: 3 + 2 + 1 rungs (the daemon's log is on stdout too)
