"""An agent restarted at a new URL on the same workdir keeps its trials.

Before: a daemon restarted with the executor's new URL failed every trial the
log said was running on the old one ("executor ... is no longer configured"),
although the moved agent had adopted them and they finished.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.crash.harness import (
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


def test_trials_of_a_moved_agent_are_adopted_not_failed(tmp_path: Path) -> None:
    sweep_id = "moved"
    trials_log = tmp_path / "trials.jsonl"
    text = sweep_yaml(trials_log, max_iterations=9, concurrency=3, sleep=0.8)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    db, port, old_port, new_port = tmp_path / "hbd.db", free_port(), free_port(), free_port()
    workdir = tmp_path / "agent"
    with stopping([]) as procs:
        agent = start_agent(workdir, old_port)
        procs.append(agent)
        old_url = f"http://127.0.0.1:{old_port}"
        daemon = start_daemon(db, port, executor=old_url, spec=spec, sweep_id=sweep_id)
        procs.append(daemon)
        deadline = time.monotonic() + 30
        while sum(e["what"] == "start" for e in read_log(trials_log)) < 3:
            assert time.monotonic() < deadline, daemon.output()
            time.sleep(0.05)
        daemon.kill()
        agent.kill()  # its trials run on, in their own sessions
        procs.append(start_agent(workdir, new_port))  # the same workdir, a new URL
        new_url = f"http://127.0.0.1:{new_port}"
        daemon = start_daemon(db, port, executor=new_url, spec=spec, sweep_id=sweep_id)
        procs.append(daemon)
        assert daemon.wait(90) == 0, daemon.output()

    con = sqlite3.connect(db)
    reasons = [r[0] for r in con.execute("SELECT reason FROM trials WHERE status = 'failed'")]
    moved = con.execute(
        "SELECT count(*) FROM events WHERE type = 'trial.dispatched' AND payload LIKE ?",
        (f"%{new_url}%",),
    ).fetchone()[0]
    con.close()
    assert reasons == [], reasons
    assert moved >= 1
    starts = trial_starts(trials_log)
    assert set(starts.values()) == {1}, starts.most_common(3)
    outcome(db, sweep_id).same_as(expected_outcome(text, sweep_id))
