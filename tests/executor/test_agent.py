"""The agent over real HTTP on 127.0.0.1 with real trial processes."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hbd.api.asgi import MAX_REQUEST_BODY_BYTES
from hbd.executor import agent as agent_module
from hbd.executor import results
from hbd.executor.process import pid_alive
from hbd.protocol import TrialUpdate

from .helpers import REPO_ROOT, running_agent, starts, submission, wait_for, wait_until

pytestmark = pytest.mark.anyio


async def test_successful_trial_reports_last_metrics(tmp_path: Path) -> None:
    async with running_agent(tmp_path / "work") as client:
        response = await client.post("/v1/trials", json=submission(tmp_path, "t1", "--mode=ok"))
        assert response.status_code == 201, response.text
        assert response.json()["state"] == "running"
        status = await wait_for(client, "t1")
    assert status["state"] == "succeeded", status
    assert status["metrics"] == {"loss": pytest.approx(1 / 3), "step": 2.0}
    assert status["exit_code"] == 0 and status["reason"] is None
    assert status["ended_at"] >= status["started_at"]
    stored = json.loads((tmp_path / "work/state/t1/result.json").read_text())
    assert stored["state"] == "succeeded"


async def test_non_zero_exit_fails_with_stderr_tail(tmp_path: Path) -> None:
    async with running_agent(tmp_path / "work") as client:
        await client.post("/v1/trials", json=submission(tmp_path, "t1", "--mode=fail"))
        status = await wait_for(client, "t1")
    assert status["state"] == "failed"
    assert status["reason"] == "exit code 3"
    assert status["exit_code"] == 3
    assert "boom" in status["stderr_tail"]
    assert status["metrics"] == {"loss": 0.5}


async def test_exit_zero_without_the_metric_fails(tmp_path: Path) -> None:
    async with running_agent(tmp_path / "work") as client:
        await client.post("/v1/trials", json=submission(tmp_path, "t1", "--mode=nometric"))
        await client.post(
            "/v1/trials", json=submission(tmp_path, "t2", "--mode=nometric", metric=None)
        )
        status = await wait_for(client, "t1")
        other = await wait_for(client, "t2")
    assert status["state"] == "failed"
    assert status["reason"] == "never reported metric 'loss'"
    assert status["metrics"] == {"accuracy": 0.9}
    assert other["state"] == "succeeded"  # no sweep metric: exit 0 is enough


async def test_missing_executable_fails_the_trial(tmp_path: Path) -> None:
    body = submission(tmp_path, "t1") | {"command": [str(tmp_path / "no-such-program")]}
    async with running_agent(tmp_path / "work") as client:
        response = await client.post("/v1/trials", json=body)
        assert response.status_code == 201
        status = await wait_for(client, "t1")
    assert status["state"] == "failed"
    assert "could not start" in status["reason"]


async def test_resubmission_is_idempotent_and_never_reruns(tmp_path: Path) -> None:
    body = submission(tmp_path, "t1", "--mode=sleep", "--seconds=1")
    async with running_agent(tmp_path / "work") as client:
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        again = await client.post("/v1/trials", json=body)
        assert again.status_code == 200 and again.json()["state"] == "running"
        finished = await wait_for(client, "t1")
        after = await client.post("/v1/trials", json=body)
        assert after.status_code == 200
        assert after.json() == finished
    assert starts(tmp_path, "t1") == 1


async def test_same_id_different_payload_conflicts(tmp_path: Path) -> None:
    async with running_agent(tmp_path / "work") as client:
        await client.post("/v1/trials", json=submission(tmp_path, "t1", "--mode=ok"))
        other = submission(tmp_path, "t1", "--mode=ok") | {"params": {"lr": 0.5}}
        response = await client.post("/v1/trials", json=other)
        assert response.status_code == 409
        assert "different payload" in response.json()["detail"]
        await wait_for(client, "t1")
    assert starts(tmp_path, "t1") == 1


async def test_full_slots_answer_429_and_start_nothing(tmp_path: Path) -> None:
    async with running_agent(tmp_path / "work", slots=1) as client:
        await client.post("/v1/trials", json=submission(tmp_path, "t1", "--mode=sleep"))
        response = await client.post("/v1/trials", json=submission(tmp_path, "t2", "--mode=ok"))
        assert response.status_code == 429
        assert response.json() == {"detail": "no free slot"}
        assert int(response.headers["Retry-After"]) > 0
        assert (await client.get("/v1/trials/t2")).status_code == 404
        health = (await client.get("/v1/health")).json()
        assert health["free_slots"] == 0 and health["running"] == ["t1"]
        await client.post("/v1/trials/t1/cancel")
        # The slot is free again once t1 is gone.
        response = await client.post("/v1/trials", json=submission(tmp_path, "t2", "--mode=ok"))
        assert response.status_code == 201
        await wait_for(client, "t2")
    assert starts(tmp_path, "t2") == 1


async def test_cancel_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    body = submission(tmp_path, "t1", "--mode=spawn", f"--pids={pids_file}")
    async with running_agent(tmp_path / "work") as client:
        await client.post("/v1/trials", json=body)
        await wait_until(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2)
        leader, child = map(int, pids_file.read_text().split())
        assert pid_alive(leader, None) and pid_alive(child, None)
        started = time.monotonic()
        response = await client.post("/v1/trials/t1/cancel")
        assert response.status_code == 200
        status = response.json()
        assert status["state"] == "cancelled"
        assert status["reason"] == "cancelled by request"
        assert time.monotonic() - started < agent_module.CANCEL_GRACE_SECONDS
        await wait_until(lambda: not pid_alive(leader, None) and not pid_alive(child, None))
        # Cancelling a finished trial returns it unchanged; unknown ids are 404.
        again = await client.post("/v1/trials/t1/cancel")
        assert again.json() == status
        assert (await client.post("/v1/trials/nope/cancel")).status_code == 404


async def test_cancel_escalates_to_sigkill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_module, "CANCEL_GRACE_SECONDS", 0.5)
    code = "import signal, time, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    body = submission(tmp_path, "t1") | {"command": [sys.executable, "-c", code]}
    async with running_agent(tmp_path / "work") as client:
        await client.post("/v1/trials", json=body)
        stdout = tmp_path / "work/trials/t1/stdout.log"
        await wait_until(lambda: stdout.exists() and "ready" in stdout.read_text())
        status = (await client.post("/v1/trials/t1/cancel")).json()
    assert status["state"] == "cancelled"
    assert status["exit_code"] == -9


async def test_callbacks_carry_metrics_then_terminal_status(tmp_path: Path) -> None:
    received: list[tuple[str, str | None, TrialUpdate]] = []
    flaky = {"left": 1}

    async def handler(request: httpx.Request) -> httpx.Response:
        if flaky["left"]:  # the first delivery fails: it must be retried
            flaky["left"] -= 1
            return httpx.Response(503)
        update = TrialUpdate.model_validate_json(request.content)
        received.append((str(request.url), request.headers.get("authorization"), update))
        return httpx.Response(204)

    body = submission(tmp_path, "t1", "--mode=ok", callback_url="http://daemon.test/cb/t1")
    async with running_agent(
        tmp_path / "work",
        callback_token="cb-secret",
        transport=httpx.MockTransport(handler),
    ) as client:
        await client.post("/v1/trials", json=body)
        await wait_for(client, "t1")
        await wait_until(lambda: any(u.kind == "status" for _, _, u in received))
    assert {url for url, _, _ in received} == {"http://daemon.test/cb/t1"}
    assert {auth for _, auth, _ in received} == {"Bearer cb-secret"}
    updates = [u for _, _, u in received]
    # Metrics lines travel in batches (several lines per callback).
    metrics = [line for u in updates if u.kind == "metrics" for line in u.metrics_lines()]
    assert [line.seq for line in metrics] == [1, 2, 3]
    assert [line.metrics["loss"] for line in metrics] == pytest.approx([1, 1 / 2, 1 / 3])
    last = updates[-1]
    assert last.kind == "status" and last.seq == 3
    assert last.status is not None and last.status.state == "succeeded"
    assert last.trial_id == "t1" and last.sweep_id == "sweep-1"


async def test_an_unreachable_callback_never_blocks_the_trial(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down", request=request)

    body = submission(tmp_path, "t1", "--mode=ok", callback_url="http://daemon.test/cb")
    async with running_agent(tmp_path / "work", transport=httpx.MockTransport(handler)) as client:
        await client.post("/v1/trials", json=body)
        status = await wait_for(client, "t1")
    assert status["state"] == "succeeded"


async def test_finished_results_survive_an_agent_restart(tmp_path: Path) -> None:
    work = tmp_path / "work"
    body = submission(tmp_path, "t1", "--mode=ok")
    async with running_agent(work) as client:
        await client.post("/v1/trials", json=body)
        finished = await wait_for(client, "t1")
    async with running_agent(work) as client:
        assert (await client.get("/v1/trials/t1")).json() == finished
        again = await client.post("/v1/trials", json=body)
        assert again.status_code == 200 and again.json() == finished
        listed = (await client.get("/v1/trials", params={"sweep_id": "sweep-1"})).json()
        assert listed == [finished]
        assert (await client.get("/v1/trials", params={"sweep_id": "other"})).json() == []
    assert starts(tmp_path, "t1") == 1


async def test_stopping_the_agent_terminates_running_trials(tmp_path: Path) -> None:
    work = tmp_path / "work"
    pids_file = tmp_path / "pids"
    async with running_agent(work) as client:
        await client.post(
            "/v1/trials", json=submission(tmp_path, "t1", "--mode=spawn", f"--pids={pids_file}")
        )
        await wait_until(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2)
    leader, child = map(int, pids_file.read_text().split())
    await wait_until(lambda: not pid_alive(leader, None) and not pid_alive(child, None))
    result = json.loads((work / "state/t1/result.json").read_text())
    assert result["state"] == "failed"
    assert result["reason"] == agent_module.SHUTDOWN_REASON


def _leader(work: Path, trial_id: str) -> int:
    """The pid of a trial's leader process, as its supervisor recorded it."""
    child = results.read_child(work, trial_id)
    assert child is not None, "the supervisor records the trial's pid once it started"
    return child[0]


async def _trial_env(
    client: httpx.AsyncClient, tmp_path: Path, trial_id: str, **extra: Any
) -> dict[str, str]:
    dump = tmp_path / f"{trial_id}.json"
    body = submission(tmp_path, trial_id, "--mode=ok", f"--dump={dump}", **extra)
    assert (await client.post("/v1/trials", json=body)).status_code == 201
    status = await wait_for(client, trial_id)
    assert status["state"] == "succeeded", status
    env: dict[str, str] = json.loads(dump.read_text())["env"]
    return env


async def test_environment_of_a_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = (tmp_path / "work").resolve()
    monkeypatch.setenv("HBD_TOKEN", "agent-secret")  # the agent's own settings stay private
    body_env = {"MARKER": str(tmp_path / "starts.txt"), "PYTHONPATH": REPO_ROOT, "EXTRA": "1"}
    async with running_agent(work) as client:
        env = await _trial_env(client, tmp_path, "t1", env=body_env | {"HBD_TRIAL_ID": "spoof"})
    assert env["HBD_TRIAL_ID"] == "t1"
    assert env["HBD_SWEEP_ID"] == "sweep-1"
    assert env["HBD_RESOURCE"] == "3"
    assert env["NUM_STEPS"] == "3" and env["num_steps"] == "3"
    assert env["HBD_METRICS_FILE"] == str(work / "trials/t1/metrics.jsonl")
    assert env["HBD_CHECKPOINT_DIR"] == str(work / "checkpoints/t1")
    assert (work / "checkpoints/t1").is_dir()
    assert env["EXTRA"] == "1"
    assert env["PATH"] == os.environ["PATH"]
    assert "HBD_RESUME_FROM" not in env
    assert "HBD_TOKEN" not in env


async def test_resume_dir_is_passed_only_when_it_exists(tmp_path: Path) -> None:
    work = (tmp_path / "work").resolve()
    explicit = tmp_path / "explicit-ckpt"
    custom = tmp_path / "custom-ckpt"
    async with running_agent(work) as client:
        env = await _trial_env(client, tmp_path, "a", resume_from="parent")
        assert "HBD_RESUME_FROM" not in env
        (work / "checkpoints/parent").mkdir(parents=True)
        env = await _trial_env(client, tmp_path, "b", resume_from="parent")
        assert env["HBD_RESUME_FROM"] == str(work / "checkpoints/parent")
        env = await _trial_env(client, tmp_path, "c", resume_dir=str(explicit))
        assert "HBD_RESUME_FROM" not in env
        explicit.mkdir()
        env = await _trial_env(
            client, tmp_path, "d", resume_dir=str(explicit), checkpoint_dir=str(custom)
        )
        assert env["HBD_RESUME_FROM"] == str(explicit)
        assert env["HBD_CHECKPOINT_DIR"] == str(custom) and custom.is_dir()


async def test_bearer_token_guards_everything_but_health(tmp_path: Path) -> None:
    async with running_agent(tmp_path / "work", token="s3cret") as client:
        assert (await client.get("/v1/trials")).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            anonymous = httpx.AsyncClient(base_url=client.base_url, headers=headers)
            async with anonymous:
                assert (await anonymous.get("/v1/trials")).status_code == 401
                assert (await anonymous.get("/v1/trials/x")).status_code == 401
                body = submission(tmp_path, "t1", "--mode=ok")
                assert (await anonymous.post("/v1/trials", json=body)).status_code == 401
                assert (await anonymous.post("/v1/trials/x/cancel")).status_code == 401
                health = await anonymous.get("/v1/health")
                assert health.status_code == 200
                assert health.json()["protocol"] == "1" and health.json()["slots"] == 2
    assert starts(tmp_path, "t1") == 0


async def test_bad_submissions_are_refused_before_anything_starts(tmp_path: Path) -> None:
    work = tmp_path / "work"
    async with running_agent(work) as client:
        body = submission(tmp_path, "t1", "--x={{ nope }}")
        response = await client.post("/v1/trials", json=body)
        assert response.status_code == 422
        assert "nope" in json.dumps(response.json())
        bad_id = submission(tmp_path, "../escape")
        assert (await client.post("/v1/trials", json=bad_id)).status_code == 422
        extra = submission(tmp_path, "t2") | {"surprise": 1}
        assert (await client.post("/v1/trials", json=extra)).status_code == 422
        huge = submission(tmp_path, "t3") | {"params": {"blob": "x" * MAX_REQUEST_BODY_BYTES}}
        assert (await client.post("/v1/trials", json=huge)).status_code == 413
        assert (await client.get("/v1/trials")).json() == []
        assert (await client.get("/v1/trials/t1")).status_code == 404
    assert not (work / "trials").exists() or list((work / "trials").iterdir()) == []


async def test_chunked_bodies_are_limited_too(tmp_path: Path) -> None:
    async def chunks() -> Any:
        for _ in range(MAX_REQUEST_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536

    async with running_agent(tmp_path / "work") as client:
        response = await client.post("/v1/trials", content=chunks())
    assert response.status_code == 413


async def test_stopping_serve_agent_is_prompt(tmp_path: Path) -> None:
    started = time.monotonic()
    async with running_agent(tmp_path / "work") as client:
        assert (await client.get("/v1/health")).status_code == 200
    assert time.monotonic() - started < 5


async def test_an_agent_that_keeps_trials_leaves_them_running_and_the_next_one_adopts(
    tmp_path: Path,
) -> None:
    work = (tmp_path / "work").resolve()
    body = submission(tmp_path, "kept", "--mode=sleep", "--seconds=60")
    pid = 0
    try:
        async with running_agent(work, keep_trials_on_exit=True) as client:
            assert (await client.post("/v1/trials", json=body)).status_code == 201
            await wait_for(client, "kept", finished=False)  # it reported: it is really running
            pid = _leader(work, "kept")
        assert pid_alive(pid, None), "the trial must outlive the agent that keeps trials"
        assert not (work / "state/kept/result.json").exists()
        async with running_agent(work) as client:
            status = (await client.get("/v1/trials/kept")).json()
            assert status["state"] == "running"
            assert (
                await client.post("/v1/trials", json=body)
            ).status_code == 200  # not started again
            await client.post("/v1/trials/kept/cancel")
            status = await wait_for(client, "kept")
        assert status["state"] == "cancelled"
        assert starts(tmp_path, "kept") == 1
        await wait_until(lambda: not pid_alive(pid, None))
    finally:
        if pid and pid_alive(pid, None):
            os.killpg(pid, 9)


async def test_an_agent_that_stops_its_trials_records_why(tmp_path: Path) -> None:
    work = (tmp_path / "work").resolve()
    body = submission(tmp_path, "stopped", "--mode=sleep", "--seconds=60")
    async with running_agent(work) as client:
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        await wait_for(client, "stopped", finished=False)
        pid = _leader(work, "stopped")
    assert not pid_alive(pid, None)
    result = json.loads((work / "state/stopped/result.json").read_text())
    assert result["state"] == "failed" and result["reason"] == agent_module.SHUTDOWN_REASON
