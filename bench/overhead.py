"""Daemon overhead: null trials through the full HTTP path.

A maxIterations=81, eta=3 sweep (206 trial runs) goes through a real daemon
process (SQLite with synchronous=FULL, the HTTP API, the dispatcher) to an
executor whose trials end at once (bench/null_executor.py), so what is
measured is hbd's own cost per trial run. The baseline, measured in the same
run, is the pure core driven in-process by the same null objective: the
ratio says how much the I/O shell costs on top of the decisions themselves.

    .venv/bin/python bench/overhead.py [--repeat 5]

Prints the median trial runs per second of each, their ratio, and the
daemon's peak RSS (VmHWM). Targets: >= 200 trial runs/s, RSS well under 100 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from hbd.core.spec import load_spec
from hbd.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
SPEC = """
version: 1.1
kind: operation
matrix:
  kind: hyperband
  maxIterations: 81
  eta: 3
  seed: 1
  resource: {name: steps, type: int}
  metric: {name: loss, optimization: minimize}
  params:
    x: {kind: uniform, value: [0, 1]}
    y: {kind: choice, value: [1, 2, 3]}
component:
  inputs: [{name: x, type: float}, {name: y, type: int}, {name: steps, type: int}]
  container: {command: [echo, "{{ x }}", "{{ y }}", "{{ steps }}"]}
"""
DAEMON = """
import sys, anyio
from pathlib import Path
from hbd.api.server import DaemonOptions, serve_daemon
from hbd.logs import configure
configure("warning")
opts = DaemonOptions(db=Path(sys.argv[1]), port=int(sys.argv[2]), executors=[sys.argv[3]])
anyio.run(serve_daemon, opts)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def null_objective(config: dict, resource: float) -> float:
    digest = hashlib.sha256(repr(sorted(config.items())).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 + 1.0 / resource


def core_rate(repeat: int) -> list[float]:
    spec = load_spec(SPEC)
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sim = simulate(spec, null_objective, seed=1)
        rates.append(len(sim.trials) / (time.perf_counter() - t0))
    return rates


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def daemon_rates(repeat: int) -> tuple[list[float], float]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ex_port, d_port = free_port(), free_port()
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "bench" / "null_executor.py"),
                        "--port",
                        str(ex_port),
                        "--slots",
                        "64",
                    ],
                    start_new_session=True,
                )
            )
            wait_http(f"http://127.0.0.1:{ex_port}/v1/health")
            daemon = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    DAEMON,
                    str(Path(tmp) / "hbd.db"),
                    str(d_port),
                    f"http://127.0.0.1:{ex_port}",
                ],
                start_new_session=True,
            )
            procs.append(daemon)
            url = f"http://127.0.0.1:{d_port}"
            wait_http(f"{url}/healthz")
            rates = []
            with httpx.Client(base_url=url, timeout=30) as client:
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    sweep_id = client.post("/v1/sweeps", content=SPEC).json()["id"]
                    while True:
                        detail = client.get(f"/v1/sweeps/{sweep_id}").json()
                        if detail["status"] != "running":
                            break
                        time.sleep(0.005)
                    elapsed = time.perf_counter() - t0
                    assert detail["trials"] == {"succeeded": 206}, detail["trials"]
                    rates.append(206 / elapsed)
            return rates, peak_rss_mb(daemon.pid)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    base = statistics.median(core_rate(repeat))
    rates, rss = daemon_rates(repeat)
    full = statistics.median(rates)
    print(f"core only (baseline): {base:10.0f} trial runs/s  (median of {repeat})")
    print(
        f"full HTTP path:       {full:10.0f} trial runs/s  (median of {repeat}; runs: "
        + ", ".join(f"{r:.0f}" for r in rates)
        + ")"
    )
    print(f"ratio full/core:      {full / base:10.3f}")
    print(f"daemon peak RSS:      {rss:10.1f} MB")


if __name__ == "__main__":
    main()
