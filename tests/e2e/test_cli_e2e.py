"""The client commands as a user runs them: real processes against a real daemon."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.e2e.conftest import Live, sweep_yaml

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def hbd(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    result = await anyio.run_process([sys.executable, "-m", "hbd", *args], check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"hbd {args} exited {result.returncode}: {result.stderr.decode()}")
    return result


async def test_submit_wait_results_json_and_csv(live: Live, tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(sweep_yaml(tmp_path / "log.jsonl"))
    submitted = await hbd("submit", str(spec), "--wait", "--url", live.url)
    out = submitted.stdout.decode()
    sweep_id = out.splitlines()[0]
    assert "succeeded" in out and "best: loss=" in out

    rows = json.loads(
        (await hbd("results", sweep_id, "--format", "json", "--url", live.url)).stdout
    )
    assert len(rows) == 22
    assert set(rows[0]) >= {
        "id",
        "bracket",
        "rung",
        "config",
        "resource",
        "status",
        "metric",
        "parent",
    }
    promoted = [r for r in rows if r["parent"]]
    assert promoted and all(isinstance(r["resource"], int) for r in rows)
    api = (await live.client.get(f"/v1/sweeps/{sweep_id}/trials")).json()
    assert {r["id"]: r["metric"] for r in rows} == {t["id"]: t["metric"] for t in api}

    text = (await hbd("results", sweep_id, "--format", "csv", "--url", live.url)).stdout.decode()
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 22 and json.loads(parsed[0]["config"]) == rows[0]["config"]

    status = (await hbd("status", sweep_id, "--json", "--url", live.url)).stdout
    assert json.loads(status)["status"] == "succeeded"


async def test_cancel_from_the_cli(live: Live, tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(sweep_yaml(tmp_path / "log.jsonl", mode="sleep"))
    sweep_id = (await hbd("submit", str(spec), "--url", live.url)).stdout.decode().strip()
    out = (await hbd("cancel", sweep_id, "--url", live.url)).stdout.decode()
    assert "stopping" in out
    assert (await live.wait_finished(sweep_id, within=30))["status"] == "stopped"


async def test_user_mistakes_are_one_line_and_exit_2(live: Live, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("matrix: {kind: hyperband}\n")
    for args in (
        ("submit", str(bad), "--url", live.url),
        ("submit", str(tmp_path / "missing.yaml"), "--url", live.url),
        ("status", "nope", "--url", live.url),
        ("submit", str(bad), "--id", "sweep.with.dots", "--url", live.url),
    ):
        result = await hbd(*args, check=False)
        err = result.stderr.decode()
        assert result.returncode == 2, (args, err)
        assert "Traceback" not in err and err.startswith("error:"), err
    assert (await live.client.get("/v1/sweeps")).json() == []


async def test_an_unreachable_daemon_is_a_failure_not_a_mistake() -> None:
    # README: exit 2 is the user's mistake, 1 when what they ran failed.
    result = await hbd("status", "--url", "http://127.0.0.1:9", check=False)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.startswith("error: cannot reach") and err.count("\n") == 1, err


async def test_hbd_run_runs_a_whole_sweep_and_prints_the_best(tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(sweep_yaml(tmp_path / "log.jsonl"))
    result = await hbd("run", str(spec), "--db", str(tmp_path / "run.db"), "--local-executor", "2")
    out = result.stdout.decode()
    assert "succeeded" in out and "best: loss=" in out and "config: x=" in out
    assert (tmp_path / "run.db").exists()
