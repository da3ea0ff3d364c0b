"""Trials on Ray vs on the hbd agent: one Hyperband iteration of null trials.

A maxIterations=81, eta=3 sweep (206 trial runs) goes through a real daemon
(in this process: SQLite, the API, the dispatcher) to

- **ray**: a real one-node Ray cluster on 127.0.0.1 (``ray start --head``,
  started and stopped here), through ``--executor ray://...``: one Ray job
  per trial run, whose entrypoint runs the trial under hbd's supervisor;
- **agent**: the hbd executor agent over HTTP on loopback (the daemon's
  embedded one, ``local_executor``), with as many slots as Ray has CPUs.

The trial is a null one: ``sh -c`` writing one metrics line. So what is
measured is each path's own cost per trial run. Printed per path (median of
``--repeat`` sweeps): the sweep's wall time, trial runs per second, and per
trial run the median time from dispatch to its end (``ended_at -
scheduled_at``: the overhead a trial pays on that path) and from its start to
its end as the executor reports them.

    .venv/bin/python bench/ray_vs_agent.py [--repeat 3] [--slots 2] [--max-iterations 81]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hbd.api.server import DaemonOptions, serve_daemon  # noqa: E402
from hbd.logs import configure  # noqa: E402
from tests.ray.conftest import started_cluster  # noqa: E402

SPEC = """
version: 1.1
kind: operation
matrix:
  kind: hyperband
  maxIterations: {max_iterations}
  eta: 3
  seed: 1
  resource: {{name: steps, type: int}}
  metric: {{name: loss, optimization: minimize}}
  params:
    x: {{kind: uniform, value: [0, 1]}}
component:
  inputs: [{{name: x, type: float}}, {{name: steps, type: int}}]
  container:
    command: [sh, -c, 'echo "{{\\"loss\\": {{{{ x }}}}}}" >> "$HBD_METRICS_FILE"']
"""


async def one_sweep(opts: DaemonOptions, spec: str) -> dict[str, Any]:
    async with anyio.create_task_group() as tg:
        running = await tg.start(serve_daemon, opts)
        async with httpx.AsyncClient(base_url=running.url, timeout=60) as client:
            t0 = time.perf_counter()
            r = await client.post("/v1/sweeps", content=spec)
            assert r.status_code == 201, r.text
            sweep_id = r.json()["id"]
            while True:
                detail = (await client.get(f"/v1/sweeps/{sweep_id}")).json()
                if detail["status"] not in ("running", "stopping"):
                    break
                await anyio.sleep(0.05)
            wall = time.perf_counter() - t0
            trials = (await client.get(f"/v1/sweeps/{sweep_id}/trials")).json()
        tg.cancel_scope.cancel()
    assert set(detail["trials"]) == {"succeeded"}, detail["trials"]
    return {
        "wall": wall,
        "runs": len(trials),
        "dispatch_to_end": statistics.median(t["ended_at"] - t["scheduled_at"] for t in trials),
        "start_to_end": statistics.median(t["ended_at"] - t["started_at"] for t in trials),
    }


def report(name: str, results: list[dict[str, Any]]) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)

    runs = results[0]["runs"]
    print(
        f"{name:6} {med('wall'):9.1f} s {runs / med('wall'):9.2f} runs/s "
        f"{med('dispatch_to_end'):12.3f} s {med('start_to_end'):12.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2, help="Ray CPUs = agent slots")
    parser.add_argument("--max-iterations", type=int, default=81)
    args = parser.parse_args()
    configure("warning")
    spec = SPEC.format(max_iterations=args.max_iterations)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        agent: list[dict[str, Any]] = []
        ray: list[dict[str, Any]] = []
        for i in range(args.repeat):
            opts = DaemonOptions(
                db=root / f"agent{i}.db", port=0, local_slots=args.slots, workdir=root / "ex"
            )
            agent.append(anyio.run(one_sweep, opts, spec))
        with started_cluster(cpus=args.slots) as cluster:
            assert cluster is not None
            for i in range(args.repeat):
                opts = DaemonOptions(db=root / f"ray{i}.db", port=0, executors=[cluster.url])
                ray.append(anyio.run(one_sweep, opts, spec))
    print(
        f"maxIterations={args.max_iterations}, eta=3: {agent[0]['runs']} trial runs, "
        f"{args.slots} at a time; medians of {args.repeat}"
    )
    print(f"{'path':6} {'wall':>11} {'rate':>16} {'dispatch→end':>14} {'start→end':>14}")
    report("agent", agent)
    report("ray", ray)


if __name__ == "__main__":
    main()
