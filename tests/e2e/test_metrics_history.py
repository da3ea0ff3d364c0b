"""Every metrics line a trial wrote is in the log once, in order, across daemon kills (issue 9.4).

Real daemon and agent processes, real trials writing a line every few tens
of milliseconds; the daemon is killed -9 twice while trials run and write,
so callbacks are lost. After the sweep ends, each trial's ``trial.metrics``
events must be exactly the lines of its metrics file, seq 1..N, in order.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.crash.harness import free_port, start_agent, start_daemon, stopping

pytestmark = pytest.mark.slow

# A trial writing a line per step, then its final loss.
TRIAL = r"""
import sys, time
import hbd
opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
x, steps = float(opts["x"]), int(opts["steps"])
for i in range(10 * steps):
    hbd.report(loss=10.0 + i, step=i)
    time.sleep(0.04)
hbd.report(loss=(x - 0.3) ** 2 + 1.0 / steps)
"""


def _spec(tmp_path: Path) -> Path:
    script = tmp_path / "trial.py"
    script.write_text(TRIAL)
    spec: dict[str, Any] = {
        "version": 1.1,
        "kind": "operation",
        "matrix": {
            "kind": "hyperband",
            "maxIterations": 3,
            "eta": 3,
            "seed": 5,
            "concurrency": 3,
            "resource": {"name": "steps", "type": "int"},
            "metric": {"name": "loss", "optimization": "minimize"},
            "params": {"x": {"kind": "uniform", "value": [0, 1]}},
        },
        "component": {
            "inputs": [{"name": "x", "type": "float"}, {"name": "steps", "type": "int"}],
            "container": {
                "command": [sys.executable, str(script)],
                "args": ["--x={{ x }}", "--steps={{ steps }}"],
            },
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _file_lines(workdir: Path) -> dict[str, list[dict[str, float]]]:
    out = {}
    for metrics in sorted((workdir / "trials").glob("*/metrics.jsonl")):
        out[metrics.parent.name] = [json.loads(x) for x in metrics.read_text().splitlines()]
    return out


def _logged(db: Path) -> dict[str, list[tuple[int, dict[str, float]]]]:
    con = sqlite3.connect(db)
    try:
        out: dict[str, list[tuple[int, dict[str, float]]]] = {}
        for trial_id, payload in con.execute(
            "SELECT trial_id, payload FROM events WHERE type = 'trial.metrics' ORDER BY seq"
        ):
            p = json.loads(payload)
            out.setdefault(trial_id, []).append((p["seq"], p["metrics"]))
        return out
    finally:
        con.close()


def _lines_written(workdir: Path) -> int:
    return sum(len(v) for v in _file_lines(workdir).values()) if workdir.exists() else 0


def test_metrics_written_while_the_daemon_is_down_are_logged_once_in_order(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path)
    db, port, agent_port = tmp_path / "hbd.db", free_port(), free_port()
    workdir = tmp_path / "agent"
    executor = f"http://127.0.0.1:{agent_port}"
    with stopping([]) as procs:
        procs.append(start_agent(workdir, agent_port))
        for _ in range(2):  # twice: start, let trials write, kill -9 while they write
            daemon = start_daemon(db, port, executor=executor, spec=spec, sweep_id="m")
            procs.append(daemon)
            written = _lines_written(workdir)
            deadline = time.monotonic() + 20
            while _lines_written(workdir) < written + 5:
                assert time.monotonic() < deadline, daemon.output()
                time.sleep(0.05)
            daemon.kill()
            down_from = _lines_written(workdir)
            deadline = time.monotonic() + 20
            while _lines_written(workdir) < down_from + 10:  # written while nobody listens
                assert time.monotonic() < deadline
                time.sleep(0.05)
        daemon = start_daemon(db, port, executor=executor, spec=spec, sweep_id="m")
        procs.append(daemon)
        assert daemon.wait(90) == 0, daemon.output()
    files = _file_lines(workdir)
    logged = _logged(db)
    assert len(files) == 6  # every trial of the sweep ran
    for trial_id, lines in files.items():
        got = logged.get(trial_id, [])
        assert [seq for seq, _ in got] == list(range(1, len(lines) + 1)), trial_id
        assert [metrics for _, metrics in got] == [
            {k: float(v) for k, v in line.items()} for line in lines
        ], trial_id
