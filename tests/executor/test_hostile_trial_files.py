"""Trials that turn their own files against the agent (issue 10.1).

Each test runs a real agent process and a real trial that replaces a file the
agent reads (its metrics file, its stderr.log) with a FIFO or a symlink to
/dev/zero. The agent must stay responsive (/v1/health within a second), end
the trial with a verdict, stop on SIGTERM, and recover after a kill -9.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.crash.harness import SIGTERM_EXIT_TIMEOUT, Proc, free_port, start_agent, stopping

pytestmark = pytest.mark.slow

# What a healthy agent answers within (issue 10: "within a second throughout").
HEALTH_WITHIN = 1.0
# How long the responsiveness check runs while the hostile trial is up.
WATCH_SECONDS = 1.5

# The trial writes its pid to $PIDFILE (so the test can always kill it), then
# turns one of its files hostile as told by argv[1], then sleeps or exits.
HOSTILE = r"""
import os, sys, time
open(os.environ["PIDFILE"], "w").write(str(os.getpid()))
mode, then = sys.argv[1], sys.argv[2]
metrics = os.environ["HBD_METRICS_FILE"]
stderr_log = os.path.join(os.environ["HBD_TRIAL_DIR"], "stderr.log")
if mode == "fifo-metrics":
    with open(metrics, "a") as f:
        f.write('{"loss": 0.5}\n')
    time.sleep(0.3)  # the agent has read the good line
    os.remove(metrics)
    os.mkfifo(metrics)
elif mode == "zero-metrics":
    if os.path.exists(metrics):
        os.remove(metrics)
    os.symlink("/dev/zero", metrics)
elif mode == "fifo-stderr":
    print("about to break", file=sys.stderr, flush=True)
    os.remove(stderr_log)
    os.mkfifo(stderr_log)
open(os.environ["PIDFILE"] + ".ready", "w").close()
if then == "sleep":
    time.sleep(60)
sys.exit(3 if then == "fail" else 0)
"""


def _submit(url: str, tmp_path: Path, trial_id: str, mode: str, then: str) -> None:
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE)
    body: dict[str, Any] = {
        "id": trial_id,
        "sweep_id": "s",
        "command": [sys.executable, str(script), mode, then],
        "resource": {"name": "steps", "value": 1},
        "env": {"PIDFILE": str(tmp_path / f"{trial_id}.pid")},
        "metric": "loss",
    }
    response = httpx.post(f"{url}/v1/trials", json=body, timeout=10.0)
    assert response.status_code == 201, response.text


def _wait_file(path: Path, agent: Proc, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared:\n{agent.output()}"
        time.sleep(0.05)


def _assert_responsive(url: str, agent: Proc, seconds: float = WATCH_SECONDS) -> None:
    """/v1/health answers within HEALTH_WITHIN, again and again, for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.monotonic()
        try:
            response = httpx.get(f"{url}/v1/health", timeout=HEALTH_WITHIN)
        except httpx.TimeoutException:
            raise AssertionError(f"agent unresponsive:\n{agent.output()}") from None
        assert response.status_code == 200
        assert time.monotonic() - began < HEALTH_WITHIN
        time.sleep(0.1)


def _wait_finished(url: str, trial_id: str, agent: Proc, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status: dict[str, Any] = httpx.get(
                f"{url}/v1/trials/{trial_id}", timeout=HEALTH_WITHIN
            ).json()
        except httpx.TimeoutException:
            raise AssertionError(f"agent unresponsive:\n{agent.output()}") from None
        if status["state"] != "running":
            return status
        assert time.monotonic() < deadline, f"trial never finished: {status}\n{agent.output()}"
        time.sleep(0.1)


def _kill_trial(tmp_path: Path, trial_id: str) -> None:
    pidfile = tmp_path / f"{trial_id}.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        os.killpg(int(pidfile.read_text()), signal.SIGKILL)


def _sigterm(agent: Proc) -> None:
    agent.popen.send_signal(signal.SIGTERM)
    try:
        code = agent.wait(SIGTERM_EXIT_TIMEOUT)
    except Exception:
        raise AssertionError(f"agent ignored SIGTERM:\n{agent.output()}") from None
    assert code == 0, agent.output()


def test_a_fifo_metrics_file_neither_hangs_the_agent_nor_its_restart(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir = tmp_path / "agent"
    try:
        with stopping([]) as procs:
            agent = start_agent(workdir, port)
            procs.append(agent)
            _submit(url, tmp_path, "fifo", "fifo-metrics", "sleep")
            _wait_file(tmp_path / "fifo.pid.ready", agent)
            _assert_responsive(url, agent)
            status = httpx.get(f"{url}/v1/trials/fifo", timeout=HEALTH_WITHIN).json()
            assert status["state"] == "running"
            assert status["metrics"] == {"loss": 0.5}  # read before the file turned hostile
            # A crash, then a restart that must get through recovery of this trial.
            agent.kill()
            agent = start_agent(workdir, port)
            procs.append(agent)
            _assert_responsive(url, agent)
            status = httpx.get(f"{url}/v1/trials/fifo", timeout=HEALTH_WITHIN).json()
            assert status["state"] == "running"  # adopted; its file is a FIFO now, so no metrics
            _sigterm(agent)
    finally:
        _kill_trial(tmp_path, "fifo")


def test_a_metrics_file_linked_to_dev_zero_is_refused_and_the_trial_ends(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        with stopping([]) as procs:
            agent = start_agent(tmp_path / "agent", port)
            procs.append(agent)
            _submit(url, tmp_path, "zero", "zero-metrics", "exit")
            _wait_file(tmp_path / "zero.pid.ready", agent)
            _assert_responsive(url, agent)
            status = _wait_finished(url, "zero", agent)
            assert status["state"] == "failed"
            assert status["reason"] == "never reported metric 'loss'"
            assert status["metrics"] == {}
            _sigterm(agent)
    finally:
        _kill_trial(tmp_path, "zero")


def test_a_fifo_stderr_log_does_not_hang_the_failed_trial_verdict(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        with stopping([]) as procs:
            agent = start_agent(tmp_path / "agent", port)
            procs.append(agent)
            _submit(url, tmp_path, "err", "fifo-stderr", "fail")
            _wait_file(tmp_path / "err.pid.ready", agent)
            status = _wait_finished(url, "err", agent)
            assert status["state"] == "failed" and status["exit_code"] == 3
            assert status["stderr_tail"] is None  # a FIFO is not read
            _assert_responsive(url, agent)
            _sigterm(agent)
    finally:
        _kill_trial(tmp_path, "err")


# A trial of a sweep run by a daemon with an in-process agent (hbd serve
# --local-executor): it records its pid, reports once, then turns its metrics
# file into a FIFO and sleeps.
SWEEP_TRIAL = r"""
import os, sys, time
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()}\n")
metrics = os.environ["HBD_METRICS_FILE"]
with open(metrics, "a") as f:
    f.write('{"loss": 0.5}\n')
time.sleep(0.3)
os.remove(metrics)
os.mkfifo(metrics)
open(sys.argv[1] + ".ready", "w").close()
time.sleep(60)
"""


def test_a_fifo_metrics_file_does_not_hang_a_daemon_with_a_local_executor(tmp_path: Path) -> None:
    import yaml

    from tests.crash.harness import spawn, wait_serving

    script = tmp_path / "trial.py"
    script.write_text(SWEEP_TRIAL)
    pids = tmp_path / "pids"
    spec = {
        "version": 1.1,
        "kind": "operation",
        "matrix": {
            "kind": "hyperband",
            "maxIterations": 1,
            "eta": 3,
            "seed": 1,
            "resource": {"name": "steps", "type": "int"},
            "metric": {"name": "loss", "optimization": "minimize"},
            "params": {"x": {"kind": "choice", "value": [1]}},
        },
        "component": {
            "inputs": [{"name": "x", "type": "int"}, {"name": "steps", "type": "int"}],
            "container": {"command": [sys.executable, str(script), str(pids)]},
        },
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["daemon", "--db", str(tmp_path / "hbd.db"), "--port", str(port)]
    args += ["--local-slots", "1", "--workdir", str(tmp_path / "work")]
    try:
        with stopping([]) as procs:
            daemon = spawn(args, tmp_path / "daemon.log")
            procs.append(daemon)
            wait_serving(daemon, f"{url}/healthz")
            response = httpx.post(f"{url}/v1/sweeps", content=yaml.safe_dump(spec), timeout=10)
            assert response.status_code == 201, response.text
            _wait_file(Path(str(pids) + ".ready"), daemon)
            end = time.monotonic() + WATCH_SECONDS
            while time.monotonic() < end:
                try:
                    assert httpx.get(f"{url}/healthz", timeout=HEALTH_WITHIN).status_code == 200
                except httpx.TimeoutException:
                    raise AssertionError(f"daemon unresponsive:\n{daemon.output()}") from None
                time.sleep(0.1)
            _sigterm(daemon)
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError):
            for pid in pids.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(pid), signal.SIGKILL)
