"""Chaos: kill -9 the agent, the daemon or both at 20+ random moments; nothing lost, nothing twice.

A seeded sweep (maxIterations=27: 69 trials, concurrency 4) of real trial
processes on a standalone agent. A seeded schedule kills one side or both with
SIGKILL, densely in the first second after a start (before the daemon even
serves) and then every 0.2-0.9 s, restarting what it killed on the same port
and workdir. At the end the sweep must equal an uninterrupted one (the pure
core's result for the same objective): the same trial ids, configs, resources,
statuses, final metrics, parents, promotions and best; every trial process
started exactly once (one marker file per start); and the log must hold every
metrics line every trial wrote, in order, once.

This is the whole promise of issue 9. Parts of it rest on the agent's per-trial
supervision (a trial whose agent died between its submission and its pid) and
on the metrics ingestion (lines written while the daemon was down); a failure
message says which part broke.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.crash.harness import (
    Proc,
    expected_outcome,
    free_port,
    outcome,
    spawn,
    start_agent,
    start_daemon,
    stopping,
)

pytestmark = pytest.mark.slow

SEED = 27
# Kills in all: the issue asks for 20 or more.
KILLS = 22
# Of them, this many fall in the first second after a (re)start: the windows
# where the daemon resumes, the agent reloads its workdir, submissions are new.
DENSE_KILLS = 6
# Intermediate metrics lines per trial, and how long a trial runs.
REPORTS = 3
TRIAL_SECONDS = 0.15
# The whole faulted sweep, restarts included, must end within this.
SWEEP_TIMEOUT = 100.0
TRIAL_PROGRAM = str(Path(__file__).with_name("chaos_trial.py"))


def chaos_spec(markers: Path) -> str:
    spec: dict[str, Any] = {
        "version": 1.1,
        "kind": "operation",
        "matrix": {
            "kind": "hyperband",
            "maxIterations": 27,
            "eta": 3,
            "seed": SEED,
            "concurrency": 4,
            "resource": {"name": "steps", "type": "int"},
            "metric": {"name": "loss", "optimization": "minimize"},
            "params": {"x": {"kind": "uniform", "value": [0, 1]}},
        },
        "component": {
            "inputs": [
                {"name": "x", "type": "float"},
                {"name": "steps", "type": "int"},
            ],
            "container": {
                "command": [sys.executable, TRIAL_PROGRAM],
                "args": [
                    "--x={{ x }}",
                    "--steps={{ steps }}",
                    f"--markers={markers}",
                    f"--reports={REPORTS}",
                    f"--sleep={TRIAL_SECONDS}",
                ],
            },
        },
    }
    return yaml.safe_dump(spec)


def _kill_moments(rng: random.Random) -> list[tuple[float, float, str]]:
    """(seconds after the last restart, seconds down, target) for every kill."""
    moments = []
    for i in range(KILLS):
        dense = i < DENSE_KILLS or rng.random() < 0.2
        wait = rng.uniform(0.0, 1.0) if dense else rng.uniform(0.2, 0.9)
        moments.append((wait, rng.uniform(0.0, 0.3), rng.choice(("daemon", "agent", "both"))))
    return moments


def test_chaos_kills_lose_nothing_and_run_nothing_twice(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    sweep_id = "chaos"
    markers = tmp_path / "markers"
    markers.mkdir()
    text = chaos_spec(markers)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    db, port, agent_port = tmp_path / "hbd.db", free_port(), free_port()
    workdir = tmp_path / "agent"
    agent_url = f"http://127.0.0.1:{agent_port}"
    kills: list[str] = []

    def agent_proc() -> Proc:
        # Not waited for: a kill may land while it reloads its workdir.
        return spawn(
            ["agent", "--port", str(agent_port), "--workdir", str(workdir), "--slots", "4"],
            tmp_path / "agent.log",
        )

    def daemon_proc() -> Proc:
        return start_daemon(db, port, executor=agent_url, spec=spec, sweep_id=sweep_id, wait=False)

    with stopping([]) as procs:
        agent = start_agent(workdir, agent_port)
        daemon = daemon_proc()
        procs += [agent, daemon]
        for wait, down, target in _kill_moments(rng):
            time.sleep(wait)
            if not daemon.alive() and daemon.popen.returncode == 0:
                break  # the sweep finished
            kills.append(target)
            if target in ("agent", "both"):
                agent.kill()
            if target in ("daemon", "both"):
                daemon.kill()
            time.sleep(down)
            if target in ("agent", "both"):
                agent = agent_proc()
                procs.append(agent)
            if target in ("daemon", "both") or not daemon.alive():
                daemon = daemon_proc()
                procs.append(daemon)
        assert daemon.wait(SWEEP_TIMEOUT) == 0, daemon.output()
    assert len(kills) >= 20, f"the sweep ended before the faults: {len(kills)} kills"

    # Every broken promise is collected, so one run says all that is wrong.
    problems: list[str] = []
    expected = expected_outcome(text, sweep_id)
    trials = _trials(db, sweep_id)
    failed = {t: row["reason"] for t, row in trials.items() if row["status"] != "succeeded"}
    if failed:
        problems.append(f"trials failed under kills (agent crash windows, issue 9.2/9.3): {failed}")

    # Every trial process started exactly once: one marker per start.
    starts = Counter(m.name.rsplit(".", 1)[0] for m in markers.iterdir())
    twice = {t: n for t, n in starts.items() if n != 1}
    if twice:
        problems.append(f"trial processes started more than once: {twice}")
    never = sorted({f"{sweep_id}-{t}" for t in expected.trials} - set(starts))
    if never:
        problems.append(f"trials whose process never started: {never}")

    # The same sweep as an uninterrupted one: ids, configs, statuses, metric,
    # parents, promotions, best; then resources and the whole final metrics.
    try:
        outcome(db, sweep_id).same_as(expected)  # also: one result each, gap-free, sound file
    except AssertionError as exc:
        problems.append(f"the sweep differs from an uninterrupted one: {str(exc)[:800]}")
    resources = _resources(text, sweep_id)
    for tid, row in sorted(trials.items()):
        if row["resource"] != resources.get(tid):
            problems.append(f"{tid}: resource {row['resource']} != {resources.get(tid)}")
        want = {"loss": expected.trials[tid][2], "step": REPORTS, "progress": 1.0}
        if tid in expected.trials and row["status"] == "succeeded" and row["metrics"] != want:
            problems.append(f"{tid}: final metrics {row['metrics']} != {want}")

    # The full metrics history: every line each trial wrote, in order, once.
    lost = {}
    for tid in sorted(trials):
        written = _written_metrics(workdir, f"{sweep_id}-{tid}")
        logged = _logged_metrics(db, f"{sweep_id}-{tid}")
        if logged != written:
            lost[tid] = (len(written), len(logged))
    if lost:
        problems.append(
            "metrics lines lost or repeated in the log (issue 9.4), "
            f"trial: (lines written, lines logged): {lost}"
        )
    assert not problems, "\n".join([f"after {len(kills)} kills:", *problems])


def _trials(db: Path, sweep_id: str) -> dict[str, dict[str, Any]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT id, status, reason, resource, metrics FROM trials WHERE sweep_id = ?",
            (sweep_id,),
        ).fetchall()
    finally:
        con.close()
    return {
        r[0].removeprefix(sweep_id + "-"): {
            "status": r[1],
            "reason": r[2],
            "resource": r[3],
            "metrics": json.loads(r[4] or "{}"),
        }
        for r in rows
    }


def _resources(text: str, sweep_id: str) -> dict[str, int | float]:
    """Each trial's resource in an uninterrupted sweep, from the pure core."""
    from collections import deque

    from hbd.core.events import Begin, StartTrial, TrialSucceeded
    from hbd.core.spec import load_spec
    from hbd.core.sweep import SweepMachine

    spec = load_spec(text)
    machine = SweepMachine.for_spec(spec, sweep_id=sweep_id, seed=SEED)
    todo = deque(machine.handle(Begin()))
    resources: dict[str, int | float] = {}
    while todo:
        d = todo.popleft()
        if isinstance(d, StartTrial):
            resources[d.trial_id.removeprefix(sweep_id + "-")] = d.resource
            loss = (float(d.config["x"]) - 0.3) ** 2 + 1.0 / int(d.resource)
            todo.extend(machine.handle(TrialSucceeded(trial_id=d.trial_id, metrics={"loss": loss})))
    return resources


def _written_metrics(workdir: Path, trial_id: str) -> list[dict[str, Any]]:
    path = workdir / "trials" / trial_id / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _logged_metrics(db: Path, trial_id: str) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT payload FROM events WHERE type = 'trial.metrics' AND trial_id = ? ORDER BY seq",
            (trial_id,),
        ).fetchall()
    finally:
        con.close()
    logged: list[dict[str, Any]] = []
    for (payload,) in rows:
        p = json.loads(payload)
        logged.append(p["metrics"])
    return logged
