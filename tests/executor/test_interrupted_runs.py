"""A trial's next run (hbd was interrupted under the last one) starts afresh; nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest

from hbd.protocol import MAX_TRIAL_RUNS

from .helpers import running_agent, starts, submission, wait_for

pytestmark = pytest.mark.anyio


async def test_a_higher_run_of_a_finished_trial_starts_it_afresh(tmp_path: Path) -> None:
    first = submission(tmp_path, "t1", "--mode=fail")
    async with running_agent(tmp_path / "work") as client:
        assert (await client.post("/v1/trials", json=first)).status_code == 201
        failed = await wait_for(client, "t1")
        assert failed["state"] == "failed"
        second = submission(tmp_path, "t1", "--mode=ok") | {"run": 2}
        started = await client.post("/v1/trials", json=second)
        assert started.status_code == 201, started.text
        done = await wait_for(client, "t1")
        assert done["state"] == "succeeded" and "something broke" not in (done["stderr_tail"] or "")
        # The new run's metrics only: the failed run's loss=0.5 line is gone.
        assert done["metrics"]["loss"] == pytest.approx(1 / 3)
        # A repeat of the same run is the same trial, as ever; an older run conflicts.
        again = await client.post("/v1/trials", json=second)
        assert again.status_code == 200 and again.json() == done
        assert (await client.post("/v1/trials", json=first)).status_code == 409
    assert starts(tmp_path, "t1") == 2


async def test_a_higher_run_of_a_running_trial_is_that_trial(tmp_path: Path) -> None:
    body = submission(tmp_path, "t1", "--mode=sleep", "--seconds=1")
    async with running_agent(tmp_path / "work") as client:
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        higher = await client.post("/v1/trials", json=body | {"run": 2})
        assert higher.status_code == 200 and higher.json()["state"] == "running"
        await wait_for(client, "t1")
    assert starts(tmp_path, "t1") == 1  # never two processes for one trial


async def test_a_new_run_survives_an_agent_restart(tmp_path: Path) -> None:
    body = submission(tmp_path, "t1", "--mode=ok")
    async with running_agent(tmp_path / "work") as client:
        await client.post("/v1/trials", json=body)
        await wait_for(client, "t1")
        await client.post("/v1/trials", json=body | {"run": 2})
        done = await wait_for(client, "t1")
    async with running_agent(tmp_path / "work") as client:
        reloaded = (await client.get("/v1/trials/t1")).json()
        assert reloaded["state"] == done["state"] and reloaded["metrics"] == done["metrics"]
        again = await client.post("/v1/trials", json=body | {"run": 2})
        assert again.status_code == 200
    assert starts(tmp_path, "t1") == 2


@pytest.mark.parametrize("run", [0, -1, MAX_TRIAL_RUNS + 1, 2**63])
async def test_run_numbers_out_of_range_are_refused(tmp_path: Path, run: int) -> None:
    async with running_agent(tmp_path / "work") as client:
        response = await client.post("/v1/trials", json=submission(tmp_path, "t1") | {"run": run})
        assert response.status_code == 422
    assert starts(tmp_path, "t1") == 0
