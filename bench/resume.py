"""Time from start to serving for a database holding one sweep of 100,000 events.

    python bench/resume.py [--events 100000] [--runs 5] [--db PATH]

Builds (once, or reuses ``--db``) a database through the Store API, written
as the daemon writes it: a seeded hyperband sweep (maxIterations=2187, eta=3:
5,343 trials) driven by the core machine with a fake objective, each trial
logged as dispatched, running, a run of metrics lines and its result, in
batches, until the log holds ``--events`` events; the sweep is left unfinished
with trials open. Then, ``--runs`` times: open_store + Daemon.run until it
signals ready (every unfinished sweep replayed, every open trial handed to
reconciliation against an in-process executor that reports them running).
Prints each run and the median. Target: under 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import anyio
import httpx

from hbd.core.codec import SUBMITTED, decision_record, observation_record
from hbd.core.events import Begin, StartTrial, TrialSucceeded
from hbd.core.spec import load_spec
from hbd.core.sweep import SweepMachine
from hbd.daemon.app import Daemon
from hbd.daemon.executors import ExecutorClient
from hbd.logs import configure as configure_logging
from hbd.protocol import Health, TrialStatus, TrialSubmission
from hbd.store.log import open_store

SWEEP_ID = "bench"
EXECUTOR = "null"
# Metrics lines per trial: ~15 epochs reported, so 5,343 trials reach 100k events.
METRICS_PER_TRIAL = 15
# Records per append: a busy daemon commits a few hundred per batch (runner.MAX_BATCH).
BATCH = 500

SPEC = """
version: 1.1
kind: operation
matrix:
  kind: hyperband
  maxIterations: 2187
  eta: 3
  seed: 1
  resource: {name: epochs, type: int}
  metric: {name: loss, optimization: minimize}
  params:
    lr: {kind: loguniform, value: [-9, -1]}
    momentum: {kind: uniform, value: [0.5, 0.99]}
    layers: {kind: choice, value: [1, 2, 3, 4]}
component:
  inputs: [{name: lr, type: float}, {name: momentum, type: float}, {name: layers, type: int},
           {name: epochs, type: int}]
  container: {command: [python, train.py, "--lr={{ lr }}", "--epochs={{ epochs }}"]}
"""


def objective(config: Any, resource: float) -> float:
    return (
        (float(config["momentum"]) - 0.9) ** 2
        + 1.0 / float(resource)
        + 0.01 * int(config["layers"])
    )


async def build(path: Path, events: int) -> int:
    spec = load_spec(SPEC)
    machine = SweepMachine(spec.matrix, sweep_id=SWEEP_ID, seed=1)
    decisions = machine.handle(Begin())
    submitted = {"name": "bench", "spec": SPEC, "spec_json": spec.to_json(), "seed": 1}
    buffer: list[tuple[str, dict[str, Any]]] = [
        (SUBMITTED, submitted),
        *map(decision_record, decisions),
    ]
    queue = deque(d for d in decisions if isinstance(d, StartTrial))
    written = 0
    at = 1_700_000_000.0
    async with await open_store(path) as store:
        while queue and written + len(buffer) < events:
            start = queue.popleft()
            tid = start.trial_id
            buffer += [
                ("trial.dispatched", {"trial_id": tid, "executor": EXECUTOR}),
                ("trial.running", {"trial_id": tid, "executor": EXECUTOR}),
            ]
            loss = objective(start.config, start.resource)
            buffer += [
                (
                    "trial.metrics",
                    {
                        "trial_id": tid,
                        "metrics": {"loss": loss + 1.0 / (i + 1), "epoch": i},
                        "seq": i + 1,
                    },
                )
                for i in range(METRICS_PER_TRIAL)
            ]
            result = TrialSucceeded(trial_id=tid, metrics={"loss": loss})
            decisions = machine.handle(result)
            buffer += [observation_record(result, metric=loss), *map(decision_record, decisions)]
            queue.extend(d for d in decisions if isinstance(d, StartTrial))
            if len(buffer) >= BATCH:
                at += 1.0
                written += len(await store.append(SWEEP_ID, buffer, at=at))
                buffer = []
        if buffer:
            written += len(await store.append(SWEEP_ID, buffer, at=at + 1.0))
        assert machine.finished is None, "the sweep must stay unfinished to be resumed"
    return written


def null_executor() -> httpx.MockTransport:
    """Every trial is running (so resume adopts them all); plenty of slots."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/health":
            return httpx.Response(
                200,
                content=Health(
                    version="bench", slots=64, free_slots=64, running=[]
                ).model_dump_json(),
            )
        if request.method == "POST" and request.url.path == "/v1/trials":
            trial_id = TrialSubmission.model_validate_json(request.content).id
        else:
            trial_id = request.url.path.split("/")[3]
        return httpx.Response(
            200,
            content=TrialStatus(
                id=trial_id, sweep_id=SWEEP_ID, state="running", started_at=0.0
            ).model_dump_json(),
        )

    return httpx.MockTransport(handler)


async def time_resume(path: Path) -> float:
    began = time.perf_counter()
    store = await open_store(path)
    try:
        async with anyio.create_task_group() as tg:
            daemon = Daemon(store)
            daemon.add_executor(EXECUTOR, ExecutorClient("http://null", transport=null_executor()))
            await tg.start(daemon.run)
            ready = time.perf_counter() - began
            tg.cancel_scope.cancel()
    finally:
        await store.close()
    return ready


async def time_read_all(path: Path) -> float:
    """Baseline: open the store and read every event of the sweep (no replay, no daemon)."""
    began = time.perf_counter()
    async with await open_store(path) as store:
        await store.sweep_events(SWEEP_ID)
    return time.perf_counter() - began


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db", type=Path, help="reuse (or create) this database")
    args = parser.parse_args()
    configure_logging("warning")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "resume.db"
        if not path.exists():
            t = time.perf_counter()
            n = await build(path, args.events)
            print(f"built {path}: {n} events in {time.perf_counter() - t:.1f} s")
        async with await open_store(path) as store:
            print(
                f"{await store.event_count()} events, {len(await store.list_trials(SWEEP_ID))} trials"
            )
        baseline = [await time_read_all(path) for _ in range(args.runs)]
        times = [await time_resume(path) for _ in range(args.runs)]
        print("baseline, open + read every event: " + ", ".join(f"{t:.3f}" for t in baseline))
        print("resume, open + replay + reconcile: " + ", ".join(f"{t:.3f}" for t in times))
        base, full = statistics.median(baseline), statistics.median(times)
        print(
            f"median baseline {base:.3f} s; median time to ready {full:.3f} s (target < 2 s); ratio {full / base:.2f}"
        )


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
