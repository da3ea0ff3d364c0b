"""Kill -9 of a standalone agent process at each window of a trial's life.

The agent runs as a real process (``python -m tests.crash.procs agent``);
``HBD_TEST_AGENT_CRASH_AT`` makes it SIGKILL itself at a named point of
starting a trial, and ``Proc.kill`` SIGKILLs it at any other moment. The
trial's supervisor lives in its own session and outlives the agent; the
restarted agent must record the trial's real outcome, or start a trial that
never started, exactly once.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hbd.executor import results
from hbd.executor.agent import CRASH_AT_ENV, GPUS_FILE
from hbd.executor.process import kill_group
from hbd.protocol import TIMEOUT_REASON
from tests.crash.harness import Proc, free_port, spawn, wait_serving

from .helpers import starts, submission

pytestmark = pytest.mark.slow

# A trial of the helper script finishes in well under this, even on a busy CI host.
TRIAL_TIMEOUT = 30.0


class Agents:
    """Start, kill and restart one agent process on one workdir and port."""

    def __init__(self, tmp_path: Path) -> None:
        self.work = (tmp_path / "work").resolve()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[Proc] = []

    def start(self, crash_at: str | None = None, gpus: str = "") -> Proc:
        env = {CRASH_AT_ENV: crash_at} if crash_at else {CRASH_AT_ENV: ""}
        args = ["agent", "--port", str(self.port), "--workdir", str(self.work), "--slots", "2"]
        args += ["--gpus", gpus]
        proc = spawn(args, self.work.parent / f"agent-{len(self.procs)}.log", env)
        self.procs.append(proc)
        wait_serving(proc, f"{self.url}/v1/health")
        assert proc.alive(), proc.output()
        return proc

    def status(self, trial_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/v1/trials/{trial_id}", timeout=5)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait_finished(self, trial_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + TRIAL_TIMEOUT
        while True:
            status = self.status(trial_id)
            if status["state"] != "running":
                return status
            assert time.monotonic() < deadline, status
            time.sleep(0.05)

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.kill()
        root = results.state_root(self.work)
        for directory in root.iterdir() if root.is_dir() else []:
            child = results.read_child(self.work, directory.name)
            if child is not None:
                kill_group(*child)


@contextlib.contextmanager
def agents(tmp_path: Path) -> Iterator[Agents]:
    running = Agents(tmp_path)
    try:
        yield running
    finally:
        running.cleanup()


def _post_into_a_crash(agents: Agents, proc: Proc, body: dict[str, Any]) -> None:
    """POST a trial to an agent that SIGKILLs itself while starting it."""
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"{agents.url}/v1/trials", json=body, timeout=10)
    assert proc.wait(10) == -9, "the agent must have died at the crash point"


def test_window_a_killed_after_the_trial_started_the_real_outcome_is_recorded(
    tmp_path: Path,
) -> None:
    body = submission(tmp_path, "t1", "--mode=ok")
    with agents(tmp_path) as a:
        _post_into_a_crash(a, a.start(crash_at="after-supervisor"), body)
        a.start()
        status = a.wait_finished("t1")
    assert status["state"] == "succeeded", status
    assert status["metrics"] == {"loss": pytest.approx(1 / 3), "step": 2.0}
    assert status["exit_code"] == 0
    assert starts(tmp_path, "t1") == 1


def test_window_b_killed_before_the_trial_started_it_is_started_once(tmp_path: Path) -> None:
    body = submission(tmp_path, "t1", "--mode=ok")
    with agents(tmp_path) as a:
        _post_into_a_crash(a, a.start(crash_at="before-supervisor"), body)
        assert starts(tmp_path, "t1") == 0
        a.start()
        status = a.wait_finished("t1")
        assert status["state"] == "succeeded", status
        assert status["metrics"]["loss"] == pytest.approx(1 / 3)
        # Restarted again: the finished trial is served, never run again.
        a.procs[-1].kill()
        a.start()
        assert a.status("t1") == status
        again = httpx.post(f"{a.url}/v1/trials", json=body, timeout=10)
        assert again.status_code == 200
    assert starts(tmp_path, "t1") == 1


@pytest.mark.parametrize("restart", [False, True], ids=["agent-up", "agent-killed"])
def test_exit_3_after_reporting_the_metric_fails_whether_or_not_the_agent_restarted(
    tmp_path: Path, restart: bool
) -> None:
    go = tmp_path / "go"
    body = submission(tmp_path, "t1", "--mode=failslow", f"--go={go}")
    with agents(tmp_path) as a:
        proc = a.start()
        assert httpx.post(f"{a.url}/v1/trials", json=body, timeout=10).status_code == 201
        deadline = time.monotonic() + TRIAL_TIMEOUT
        while not a.status("t1")["metrics"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        if restart:
            proc.kill()
            go.touch()
            exit_file = results.state_dir(a.work, "t1") / "exit.json"
            while not exit_file.exists():  # it ends while no agent watches
                assert time.monotonic() < deadline
                time.sleep(0.05)
            a.start()
        else:
            go.touch()
        status = a.wait_finished("t1")
    assert status["state"] == "failed", status
    assert status["reason"] == "exit code 3" and status["exit_code"] == 3
    assert status["metrics"] == {"loss": 0.5}
    assert starts(tmp_path, "t1") == 1


def test_a_timeout_is_enforced_while_the_agent_is_down(tmp_path: Path) -> None:
    body = submission(tmp_path, "t1", "--mode=sleep", "--seconds=60", timeout_seconds=1.0)
    with agents(tmp_path) as a:
        proc = a.start()
        started = time.monotonic()
        assert httpx.post(f"{a.url}/v1/trials", json=body, timeout=10).status_code == 201
        proc.kill()
        exit_file = results.state_dir(a.work, "t1") / "exit.json"
        while not exit_file.exists():
            assert time.monotonic() - started < TRIAL_TIMEOUT
            time.sleep(0.05)
        a.start()
        status = a.wait_finished("t1")
    assert status["state"] == "failed" and status["reason"] == TIMEOUT_REASON
    assert starts(tmp_path, "t1") == 1


@pytest.mark.parametrize("window", ["before-supervisor", "after-supervisor"])
def test_hbd_serve_with_its_embedded_agent_killed_at_a_window_resumes_exactly(
    tmp_path: Path, window: str
) -> None:
    import os
    import subprocess
    import sys

    from tests.crash.harness import REPO_ROOT, expected_outcome, outcome, trial_starts
    from tests.e2e.conftest import sweep_yaml

    trials_log = tmp_path / "trials.jsonl"
    text = sweep_yaml(trials_log, max_iterations=3, concurrency=2)
    db, port = tmp_path / "hbd.db", free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HBD_")}
    procs: list[subprocess.Popen[bytes]] = []

    def serve(crash_at: str | None) -> subprocess.Popen[bytes]:
        args = ["serve", "--port", str(port), "--db", str(db), "--local-executor", "2"]
        with (tmp_path / f"serve-{len(procs)}.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hbd", *args, "--log-format", "json"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env | ({CRASH_AT_ENV: crash_at} if crash_at else {}),
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        procs.append(proc)
        deadline = time.monotonic() + TRIAL_TIMEOUT
        while proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "hbd serve did not come up"
            time.sleep(0.05)
        return proc

    try:
        first = serve(window)
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{url}/v1/sweeps", params={"id": "w"}, content=text, timeout=10)
        assert first.wait(TRIAL_TIMEOUT) == -9, "the daemon must have died starting a trial"
        serve(None)
        deadline = time.monotonic() + 4 * TRIAL_TIMEOUT
        while httpx.get(f"{url}/v1/sweeps/w", timeout=5).json()["status"] == "running":
            assert time.monotonic() < deadline, "the resumed sweep did not finish"
            time.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()
    starts_by_trial = trial_starts(trials_log)
    assert set(starts_by_trial.values()) == {1}, starts_by_trial
    outcome(db, "w").same_as(expected_outcome(text, "w"))


def test_window_b_with_gpus_the_restarted_agent_starts_it_on_its_recorded_device(
    tmp_path: Path,
) -> None:
    dump = tmp_path / "env.json"
    body = submission(
        tmp_path,
        "g1",
        "--mode=ok",
        f"--dump={dump}",
        resources={"limits": {"nvidia.com/gpu": "1"}},
    )
    with agents(tmp_path) as a:
        _post_into_a_crash(a, a.start(crash_at="before-supervisor", gpus="0,1"), body)
        recorded = json.loads((a.work / "state" / "g1" / GPUS_FILE).read_text())
        assert len(recorded) == 1 and recorded[0] in ("0", "1")
        a.start(gpus="0,1")
        assert a.wait_finished("g1")["state"] == "succeeded"
    assert json.loads(dump.read_text())["env"]["CUDA_VISIBLE_DEVICES"] == recorded[0]
    assert starts(tmp_path, "g1") == 1
