"""Faults a review found in the agent: recovery of a hostile trial, a lingering supervisor."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from hbd.executor import agent as agent_module
from hbd.executor import process, results, supervisor
from hbd.executor.agent import RECOVERY_FAILED_REASON
from hbd.protocol import TrialSubmission

from .helpers import running_agent, starts, submission, wait_for, wait_until

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


_IGNORES_SIGTERM = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(os.environ['MARKER'], 'a').write(os.environ['HBD_TRIAL_ID'] + '\\n')\n"
    "open(sys.argv[1], 'w').close()\n"
    "time.sleep(60)\n"
)


@pytest.mark.slow
async def test_a_failed_trial_whose_supervisor_lingers_is_not_started_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The supervisor outlives the agent's stop wait: its trial ignores SIGTERM for
    # the whole grace, and the agent waits far less than that.
    grace = 8.0
    monkeypatch.setattr(agent_module, "CANCEL_GRACE_SECONDS", grace)
    monkeypatch.setattr(agent_module, "STOP_WAIT_SECONDS", 0.1)
    ready = tmp_path / "ready"
    original = agent_module.Agent._drain

    async def failing_drain(self: Any, trial: Any, tail: Any, **kwargs: Any) -> None:
        if not kwargs.get("final") and ready.exists():
            raise RuntimeError("injected supervision bug")
        await original(self, trial, tail, **kwargs)

    monkeypatch.setattr(agent_module.Agent, "_drain", failing_drain)
    body = submission(tmp_path, "t1", metric=None)
    body["command"] = [sys.executable, "-c", _IGNORES_SIGTERM, str(ready)]
    work = tmp_path / "work"
    async with running_agent(work, slots=1) as client:
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        status = await wait_for(client, "t1")
        assert status["state"] == "failed" and "injected" in status["reason"]
        state = results.state_dir(work, "t1")
        assert process.supervisor_alive(state)  # else this test proves nothing
        # While it lives: the next run is answered with the status, not started,
        # and its slot stays taken.
        again = await client.post("/v1/trials", json=body | {"run": 2})
        assert again.status_code == 200 and again.json()["state"] == "failed"
        assert (await client.get("/v1/health")).json()["free_slots"] == 0
        assert (await client.post("/v1/trials", json=submission(tmp_path, "t2"))).status_code == 429
        assert starts(tmp_path, "t1") == 1
        await wait_until(lambda: not process.supervisor_alive(state), timeout=grace + 20)
        # Gone: the slot is free and the next run starts afresh.
        assert (await client.get("/v1/health")).json()["free_slots"] == 1
        ready.unlink()  # no more injected faults
        ok = submission(tmp_path, "t1", "--mode=ok") | {"run": 2}
        assert (await client.post("/v1/trials", json=ok)).status_code == 201
        assert (await wait_for(client, "t1"))["state"] == "succeeded"
    assert starts(tmp_path, "t1") == 2


# ------------------------------------------------------- state file size (review 3)


def test_a_state_file_over_the_limit_is_an_error_never_truncated(tmp_path: Path) -> None:
    limit = supervisor.MAX_STATE_FILE_BYTES
    (tmp_path / "fits").write_bytes(b"x" * limit)
    (tmp_path / "big").write_bytes(b"x" * (limit + 1))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert supervisor.read_file_at(fd, "fits") == b"x" * limit
        with pytest.raises(supervisor.StateFileTooLarge, match="limit"):
            supervisor.read_file_at(fd, "big")
    finally:
        os.close(fd)


def _post_utf8(body: dict[str, Any]) -> dict[str, Any]:
    """Send the body as UTF-8 JSON (not escaped), as a client may."""
    data = json.dumps(body, ensure_ascii=False).encode()
    return {"content": data, "headers": {"content-type": "application/json"}}


async def test_a_large_non_ascii_submission_that_fits_runs(tmp_path: Path) -> None:
    # 600 kB as UTF-8, 1.2 MB were it written with \\u escapes (in pieces: one
    # environment string may not pass 128 KiB on Linux).
    body = submission(tmp_path, "t1", "--mode=ok")
    body["env"] = body["env"] | {f"BIG{i}": "中" * 33_000 for i in range(6)}
    async with running_agent(tmp_path / "work") as client:
        response = await client.post("/v1/trials", **_post_utf8(body))
        assert response.status_code == 201, response.text
        status = await wait_for(client, "t1")
        assert status["state"] == "succeeded", status


async def test_a_submission_whose_files_would_pass_the_limit_is_refused_422(
    tmp_path: Path,
) -> None:
    body = submission(tmp_path, "t1", "--mode=ok")
    body["params"] = {"blob": "a" * 400_000}  # under the body limit, thrice in the command
    body["command"] = [*body["command"], "{{ blob }}", "{{ blob }}", "{{ blob }}"]
    work = tmp_path / "work"
    async with running_agent(work, slots=1) as client:
        response = await client.post("/v1/trials", json=body)
        assert response.status_code == 422, response.text
        assert str(supervisor.MAX_STATE_FILE_BYTES) in response.text
        assert (await client.get("/v1/health")).json()["free_slots"] == 1
        assert (await client.get("/v1/trials/t1")).status_code == 404
    assert starts(tmp_path, "t1") == 0
