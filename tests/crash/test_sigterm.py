"""SIGTERM: the daemon exits 0 promptly, its trials keep running, the next start adopts them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.crash.harness import (
    SIGTERM_EXIT_TIMEOUT,
    expected_outcome,
    free_port,
    outcome,
    start_agent,
    start_daemon,
    stopping,
    trial_starts,
)
from tests.e2e.conftest import read_log, sweep_yaml

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_leaves_trials_running_and_the_next_start_adopts_them(tmp_path: Path) -> None:
    sweep_id = "term"
    trials_log = tmp_path / "trials.jsonl"
    # The first trials are held (see trial_program.py's --hold) until the next
    # daemon serves: caught running after the SIGTERMed daemon has exited and
    # still running when it is adopted, on any machine, with no fixed sleep.
    hold = tmp_path / "hold"
    hold.touch()
    text = sweep_yaml(trials_log, concurrency=4, hold=hold)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    db, port, agent_port = tmp_path / "hbd.db", free_port(), free_port()
    agent_url = f"http://127.0.0.1:{agent_port}"
    with stopping([]) as procs:
        try:
            procs.append(start_agent(tmp_path / "agent", agent_port))
            daemon = start_daemon(db, port, executor=agent_url, spec=spec, sweep_id=sweep_id)
            procs.append(daemon)
            deadline = time.monotonic() + 20
            while len(read_log(trials_log)) < 4:  # four trials running
                assert time.monotonic() < deadline, daemon.output()
                time.sleep(0.05)
            daemon.popen.send_signal(signal.SIGTERM)
            began = time.monotonic()
            assert daemon.wait(SIGTERM_EXIT_TIMEOUT) == 0, daemon.output()
            took = time.monotonic() - began
            running = [e["pid"] for e in read_log(trials_log) if e["what"] == "start"]
            ended = {e["pid"] for e in read_log(trials_log) if e["what"] == "end"}
            left = [pid for pid in running if pid not in ended]
            assert len(left) == 4 and all(_alive(pid) for pid in left), (
                "SIGTERM must not stop trials on executors"
            )
            daemon = start_daemon(db, port, executor=agent_url, spec=spec, sweep_id=sweep_id)
            procs.append(daemon)
            assert all(_alive(pid) for pid in left)  # still running when adopted
        finally:
            hold.unlink(missing_ok=True)  # released: held trials end (also on failure)
        assert daemon.wait(60) == 0, daemon.output()
    assert took < SIGTERM_EXIT_TIMEOUT
    starts = trial_starts(trials_log)
    assert set(starts.values()) == {1}, f"a trial ran twice: {starts.most_common(3)}"
    outcome(db, sweep_id).same_as(expected_outcome(text, sweep_id))
