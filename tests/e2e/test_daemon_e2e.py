"""A real daemon, a real executor agent and real trial processes over loopback."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from hbd.core.geometry import brackets
from tests.e2e.conftest import Live, max_overlap, read_log, sweep_yaml

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_sweep_runs_exact_hyperband_counts_within_concurrency(
    live: Live, tmp_path: Path
) -> None:
    log = tmp_path / "trials.jsonl"
    r = await live.client.post("/v1/sweeps", content=sweep_yaml(log, concurrency=2, sleep=0.05))
    assert r.status_code == 201, r.text
    sweep_id = r.json()["id"]
    detail = await live.wait_finished(sweep_id)
    assert detail["status"] == "succeeded"
    planned = sum(b.trial_runs for b in brackets(9, 3))
    assert detail["trials"] == {"succeeded": planned}
    for b in detail["brackets"]:
        for rung in b["rungs"]:
            assert rung["trials"] == rung["planned"]
    entries = read_log(log)
    assert len([e for e in entries if e["what"] == "start"]) == planned  # each trial ran once
    assert max_overlap(entries) <= 2
    trials = (await live.client.get(f"/v1/sweeps/{sweep_id}/trials")).json()
    best = min(trials, key=lambda t: t["metric"])
    assert detail["best"]["id"] == best["id"]


async def test_resume_passes_the_previous_rungs_checkpoint(live: Live, tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    r = await live.client.post("/v1/sweeps", content=sweep_yaml(log, resume=True))
    sweep_id = r.json()["id"]
    await live.wait_finished(sweep_id)
    trials = {t["id"]: t for t in (await live.client.get(f"/v1/sweeps/{sweep_id}/trials")).json()}
    promoted = [t for t in trials.values() if t["parent"]]
    assert promoted
    for t in promoted:
        assert t["metrics"]["resumed_from"] == trials[t["parent"]]["resource"]
    assert all(t["metrics"]["resumed_from"] == 0 for t in trials.values() if not t["parent"])


async def test_cancel_stops_every_trial_process(live: Live, tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    r = await live.client.post(
        "/v1/sweeps", content=sweep_yaml(log, mode="sleep", concurrency=None)
    )
    sweep_id = r.json()["id"]
    with anyio.fail_after(20):
        while len(read_log(log)) < 4:
            await anyio.sleep(0.05)
    r = await live.client.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert r.status_code == 202 and r.json()["cancelling"] is True
    detail = await live.wait_finished(sweep_id, within=30)
    assert detail["status"] == "stopped"
    assert set(detail["trials"]) == {"cancelled"}
    pids = [e["pid"] for e in read_log(log)]
    assert pids and not [p for p in pids if alive(p)]


async def test_failed_trials_are_recorded_with_reason_and_stderr(
    live: Live, tmp_path: Path
) -> None:
    log = tmp_path / "trials.jsonl"
    r = await live.client.post("/v1/sweeps", content=sweep_yaml(log, fail_above=0.5))
    sweep_id = r.json()["id"]
    await live.wait_finished(sweep_id)
    failed = (
        await live.client.get(f"/v1/sweeps/{sweep_id}/trials", params={"status": "failed"})
    ).json()
    assert failed
    assert all(t["reason"] and "exit code 1" in t["reason"] for t in failed)
    assert all(t["parent"] is None or t["rung"] > 0 for t in failed)


async def test_bad_spec_is_refused_with_every_error_and_nothing_stored(live: Live) -> None:
    bad = "matrix:\n  kind: hyperband\n  eta: 1\ncomponent: {container: {command: [x]}}\n"
    r = await live.client.post("/v1/sweeps", content=bad)
    assert r.status_code == 422
    locs = {e["loc"] for e in r.json()["errors"]}
    assert any("eta" in loc for loc in locs) and any(
        "maxIterations" in loc or "max_iterations" in loc for loc in locs
    )
    assert (await live.client.get("/v1/sweeps")).json() == []


async def test_unknown_sweep_is_404(live: Live) -> None:
    assert (await live.client.get("/v1/sweeps/nope")).status_code == 404
    assert (await live.client.get("/v1/sweeps/nope/trials")).status_code == 404
    assert (await live.client.post("/v1/sweeps/nope/cancel")).status_code == 404


async def test_same_id_same_spec_is_idempotent_and_other_spec_conflicts(
    live: Live, tmp_path: Path
) -> None:
    log = tmp_path / "t.jsonl"
    text = sweep_yaml(log)
    first = await live.client.post("/v1/sweeps", params={"id": "mine"}, content=text)
    again = await live.client.post("/v1/sweeps", params={"id": "mine"}, content=text)
    other = await live.client.post(
        "/v1/sweeps", params={"id": "mine"}, content=sweep_yaml(log, seed=12)
    )
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    await live.wait_finished("mine")
    assert len((await live.client.get("/v1/sweeps")).json()) == 1


async def test_max_retries_reruns_a_failed_trial_run_and_the_sweep_is_unchanged(
    live: Live, tmp_path: Path
) -> None:
    clean = await live.client.post(
        "/v1/sweeps", params={"id": "clean"}, content=sweep_yaml(tmp_path / "a.jsonl")
    )
    flaky_spec = sweep_yaml(tmp_path / "b" / "b.jsonl", fail_once=True, max_retries=1)
    (tmp_path / "b").mkdir()
    flaky = await live.client.post("/v1/sweeps", params={"id": "flaky"}, content=flaky_spec)
    assert clean.status_code == flaky.status_code == 201
    a, b = await live.wait_finished("clean"), await live.wait_finished("flaky")
    assert a["status"] == b["status"] == "succeeded"
    trials = (await live.client.get("/v1/sweeps/flaky/trials")).json()
    first_runs = [t for t in trials if "-a" not in t["id"]]
    retries = [t for t in trials if t["id"].endswith("-a1")]
    assert len(retries) == len(first_runs) == 22  # every run failed once and ran again
    assert {t["status"] for t in first_runs} == {"failed"} and {t["status"] for t in retries} == {
        "succeeded"
    }
    assert all(t["reason"] == "exit code 75" for t in first_runs)
    assert a["best"]["config"] == b["best"]["config"] and a["best"]["metric"] == b["best"]["metric"]
