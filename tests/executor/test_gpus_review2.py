"""Review: a restarted agent and GPU records it finds on disk (real agent, fake device ids)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest

from hbd.executor import process, results
from hbd.executor.agent import GPUS_FILE
from hbd.protocol import TrialStatus, TrialSubmission

from .helpers import running_agent
from .test_gpus import _env_of, _gpu_trial, _health

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "records",
    [
        [["0"], ["0"]],  # two trials claim one device
        [["0", "0"], ["1"]],  # one claims a device twice (and so holds one, not two)
    ],
)
async def test_trials_started_at_recovery_never_share_a_device(
    tmp_path: Path, records: list[list[str]]
) -> None:
    # Bug: a trial the previous agent accepted but never started is started at
    # recovery on the devices its gpus.json names, checked only for count and
    # membership: two records naming one device (a file the trial's own user
    # can write, or a corrupt one) started two trials on it.
    work = (tmp_path / "work").resolve()
    need = [len(r) for r in records]
    for i, (record, count) in enumerate(zip(records, need, strict=True)):
        sub = TrialSubmission.model_validate(_gpu_trial(tmp_path, f"t{i}", count))
        results.write_submission(work, sub)
        results.write_state_file(work, sub.id, GPUS_FILE, json.dumps(record).encode())
    async with running_agent(work, gpus=("0", "1", "2")) as client:
        seen = [(await _env_of(tmp_path, f"t{i}"))["CUDA_VISIBLE_DEVICES"] for i in range(2)]
        devices = [d for value in seen for d in value.split(",")]
        assert len(devices) == sum(need) and len(set(devices)) == len(devices), seen
        assert len((await _health(client))["free_gpus"]) == 3 - sum(need)
        for i in range(2):
            await client.post(f"/v1/trials/t{i}/cancel")


async def test_a_restarted_agent_keeps_the_devices_of_a_failed_trial_whose_supervisor_lingers(
    tmp_path: Path,
) -> None:
    # Bug: a trial recorded failed while its supervisor outlived the stop wait
    # (the agent says it "keeps its devices until it has exited") lost them at
    # an agent restart: recovered from its result, it held neither slot nor
    # device, and the next trial was given the device still in use.
    work = (tmp_path / "work").resolve()
    sub = TrialSubmission.model_validate(_gpu_trial(tmp_path, "lingers", 1))
    results.write_submission(work, sub)
    results.write_state_file(work, sub.id, GPUS_FILE, b'["0"]')
    status = TrialStatus(
        id=sub.id,
        sweep_id=sub.sweep_id,
        state="failed",
        reason="executor shut down while the trial ran",
        started_at=1.0,
        ended_at=2.0,
    )
    results.write_result(work, status)
    lock = process.try_lock(results.state_dir(work, sub.id))  # the supervisor, still alive
    assert lock is not None
    try:
        async with running_agent(work, slots=2, gpus=("0", "1")) as client:
            health = await _health(client)
            assert health["free_gpus"] == ["1"] and health["free_slots"] == 1, health
            os.close(lock)  # it exits at last
            lock = None
            for _ in range(200):
                if (await _health(client))["free_gpus"] == ["0", "1"]:
                    break
                await anyio.sleep(0.05)
            assert (await _health(client))["free_gpus"] == ["0", "1"]
    finally:
        if lock is not None:
            os.close(lock)
