"""Faults a review found in the agent: recovery of a hostile trial, a lingering supervisor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hbd.executor import process, results
from hbd.executor.agent import RECOVERY_FAILED_REASON
from hbd.protocol import TrialSubmission

from .helpers import running_agent, starts, submission, wait_for

pytestmark = pytest.mark.anyio


async def test_a_trial_whose_state_cannot_be_recovered_is_failed_and_the_agent_starts(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    # Recorded but never finished; its lock replaced by a link loop (a trial can
    # reach state/<id>/ through $HBD_TRIAL_DIR/../../state/<id>): opening it is ELOOP.
    hostile = TrialSubmission.model_validate(submission(tmp_path, "bad"))
    results.write_submission(work, hostile)
    lock = results.state_dir(work, "bad") / process.LOCK_FILE
    os.symlink(lock, lock)
    async with running_agent(work) as client:
        status = (await client.get("/v1/trials/bad")).json()
        assert status["state"] == "failed"
        assert status["reason"].startswith(RECOVERY_FAILED_REASON)
        # The agent works: another trial runs.
        ok = submission(tmp_path, "good", "--mode=ok")
        assert (await client.post("/v1/trials", json=ok)).status_code == 201
        assert (await wait_for(client, "good"))["state"] == "succeeded"
    assert starts(tmp_path, "bad") == 0
