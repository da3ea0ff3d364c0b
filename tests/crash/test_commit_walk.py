"""Kill -9 the daemon right after its N-th commit, for N over a whole sweep, and compare.

A small seeded sweep (maxIterations=9, eta=3: 22 trials) runs once
uninterrupted against a standalone executor agent; that run makes about 85
commits (scheduling, dispatch, results, metrics lines, decisions). Then, for
each sampled N, a fresh database is driven by a daemon started with
HBD_FAULT_EXIT_AFTER_COMMITS=N, which dies with status 137 right after its
N-th COMMIT; a second daemon (no fault) resumes it to the end. Every resumed
sweep must match the uninterrupted one: the same trials with the same configs
and results, the same promotions, the same best trial; one result and one
scheduling per trial, gap-free seqs, integrity_check ok; and each trial
process started exactly once (the agent outlives every daemon crash, and runs
longer than its 60 s retention sweep, which once stopped it).

Sampling: one iteration costs ~5 s of wall time (two daemon start-ups and 22
trials, each through its own supervisor process), so on a 2-core machine the
full walk takes ~4 minutes. By default every 11th commit is taken (N = 1, 12,
23, ...: a prime stride, ~15 iterations); every kind of commit recurs throughout the sweep, so
each is still crashed after many times. Set HBD_CRASH_WALK_STEP=1 for the full
walk.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.crash.harness import (
    FAULT_EXIT_STATUS,
    Outcome,
    commits_of,
    free_port,
    outcome,
    start_agent,
    start_daemon,
    stopping,
    trial_starts,
)
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.slow

COMMIT_WALK_STEP = int(os.environ.get("HBD_CRASH_WALK_STEP", "11"))
# Iterations run side by side: each is mostly waiting on subprocess start-up.
WORKERS = 3
# One daemon run of this small sweep takes ~1 s; this only catches a hang.
RUN_TIMEOUT = 60.0


def _run(
    tmp: Path, agent_url: str, sweep_id: str, fault_after: int | None
) -> tuple[Outcome, int | None]:
    spec = tmp / f"{sweep_id}.yaml"
    spec.write_text(sweep_yaml(tmp / f"{sweep_id}.jsonl", concurrency=4))
    db, port = tmp / f"{sweep_id}.db", free_port()
    crashed: int | None = None
    with stopping([]) as procs:
        if fault_after is not None:
            procs.append(
                start_daemon(
                    db,
                    port,
                    executor=agent_url,
                    spec=spec,
                    sweep_id=sweep_id,
                    fault_after=fault_after,
                    wait=False,
                )
            )
            crashed = procs[-1].wait(RUN_TIMEOUT)
            assert crashed in (FAULT_EXIT_STATUS, 0), procs[-1].output()
        procs.append(
            start_daemon(db, port, executor=agent_url, spec=spec, sweep_id=sweep_id, wait=False)
        )
        assert procs[-1].wait(RUN_TIMEOUT) == 0, procs[-1].output()
    starts = trial_starts(tmp / f"{sweep_id}.jsonl")
    result = outcome(db, sweep_id)
    assert sorted(starts) == sorted(f"{sweep_id}-{t}" for t in result.trials)
    assert set(starts.values()) == {1}, f"a trial ran twice: {starts.most_common(3)}"
    return result, crashed


def test_kill_after_every_commit_resumes_to_the_same_sweep(tmp_path: Path) -> None:
    port = free_port()
    with stopping([]) as procs:
        procs.append(start_agent(tmp_path / "agent", port))
        url = f"http://127.0.0.1:{port}"
        reference, _ = _run(tmp_path, url, "ref", None)
        assert reference.status == "succeeded" and len(reference.trials) == 22
        total = commits_of(tmp_path / "ref.db")
        points = list(range(1, total + 1, COMMIT_WALK_STEP))
        with ThreadPoolExecutor(WORKERS) as pool:
            runs = list(pool.map(lambda n: _run(tmp_path, url, f"k{n}", n), points))
    crashed = 0
    for _, (resumed, status) in zip(points, runs, strict=True):
        resumed.same_as(reference)
        crashed += status == FAULT_EXIT_STATUS
    # Commit counts vary a little with batching; nearly every point must have crashed.
    assert crashed >= len(points) - 2
