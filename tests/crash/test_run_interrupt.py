"""``hbd run`` interrupted (Ctrl-C or SIGTERM) is the same sweep when run again.

Before: the interrupted trials were recorded as failed (SIGTERM even left them
running, orphaned), so resuming gave another result. Now they are recorded as
interrupted, every trial process stops, the command says how to resume, and
the same ``hbd run FILE`` in the same folder resumes the sweep, runs the
interrupted trials again as the same trials and ends as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.crash.harness import expected_outcome, outcome, spawn_cli, stopping, trial_starts
from tests.e2e.conftest import read_log, sweep_yaml

pytestmark = pytest.mark.slow

# The interrupted run must stop its trials and exit within this (the agent
# gives each trial a SIGTERM grace before SIGKILL).
INTERRUPT_EXIT_TIMEOUT = 30.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _events(db: Path, event_type: str) -> list[dict[str, object]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT payload FROM events WHERE type = ? ORDER BY seq", (event_type,))
        return [json.loads(r[0]) for r in rows]
    finally:
        con.close()


@pytest.mark.parametrize(
    ("signum", "twice"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["ctrl-c", "sigterm", "ctrl-c-twice"],
)
def test_an_interrupted_hbd_run_resumes_to_the_uninterrupted_result(
    tmp_path: Path, signum: signal.Signals, twice: bool
) -> None:
    trials_log = tmp_path / "trials.jsonl"
    text = sweep_yaml(trials_log, max_iterations=9, concurrency=3, sleep=0.6)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(text)
    db = tmp_path / ".hbd" / "hbd.db"
    with stopping([]) as procs:
        first = spawn_cli(["run", "sweep.yaml"], tmp_path / "first.log", cwd=tmp_path)
        procs.append(first)
        deadline = time.monotonic() + 60
        # Interrupt while trials run, after some have finished.
        while not (
            sum(e["what"] == "end" for e in read_log(trials_log)) >= 2
            and sum(e["what"] == "start" for e in read_log(trials_log))
            > sum(e["what"] == "end" for e in read_log(trials_log))
        ):
            assert time.monotonic() < deadline and first.alive(), first.output()
            time.sleep(0.02)
        # Ctrl-C in a terminal signals the whole foreground group; trials have their own.
        os.killpg(first.popen.pid, signum)
        if twice:  # an impatient user: the second one must not orphan the trials
            time.sleep(0.1)
            os.killpg(first.popen.pid, signum)
        assert first.wait(INTERRUPT_EXIT_TIMEOUT) == 130, first.output()
        said = first.output()
        starts = [e for e in read_log(trials_log) if e["what"] == "start"]
        assert not [e for e in starts if _alive(int(e["pid"]))], "a trial outlived hbd run"

        con = sqlite3.connect(db)
        (sweep_id,) = con.execute("SELECT id FROM sweeps").fetchone()
        con.close()
        assert f"sweep {sweep_id}" in said and "interrupted" in said, said
        assert f"database: {Path('.hbd') / 'hbd.db'}" in said, said
        assert "resume with: hbd run sweep.yaml" in said, said
        interrupted = {str(p["trial_id"]) for p in _events(db, "trial.interrupted")}
        assert interrupted, "no trial was recorded as interrupted"
        assert not _events(db, "trial.failed"), "an interrupted trial was recorded as failed"

        again = spawn_cli(["run", "sweep.yaml"], tmp_path / "again.log", cwd=tmp_path)
        procs.append(again)
        assert again.wait(90) == 0, again.output()
        assert f"resuming sweep {sweep_id}" in again.output(), again.output()

    # The same sweep, ending as an uninterrupted one would: same trials, configs,
    # statuses, metrics, parents, promotions and best; no failure anywhere.
    outcome(db, sweep_id).same_as(expected_outcome(text, sweep_id))
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM sweeps").fetchone()[0] == 1
    con.close()
    runs = trial_starts(trials_log)
    # Each interrupted trial ran again (once); every other trial ran exactly once.
    for trial_id, n in runs.items():
        assert n == (2 if trial_id in interrupted and n > 1 else 1), (trial_id, n)
    assert all(runs[t] <= 2 for t in interrupted)
