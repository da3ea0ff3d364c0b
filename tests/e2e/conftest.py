"""A real daemon with a real local executor on 127.0.0.1, stopped when the test ends."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from hbd.api.server import DaemonOptions, Running, serve_daemon

TRIAL_PROGRAM = str(Path(__file__).with_name("trial_program.py"))


def sweep_yaml(
    log: Path,
    *,
    max_iterations: int = 9,
    concurrency: int | None = 3,
    resume: bool = False,
    mode: str = "ok",
    sleep: float = 0.0,
    fail_above: float = 2.0,
    seed: int = 11,
    fail_once: bool = False,
    max_retries: int = 0,
    hold: Path | None = None,
) -> str:
    """A seeded sweep of the trial program; ``hold``: see trial_program.py's --hold."""
    spec: dict[str, Any] = {
        "version": 1.1,
        "kind": "operation",
        "matrix": {
            "kind": "hyperband",
            "maxIterations": max_iterations,
            "eta": 3,
            "seed": seed,
            "resume": resume,
            "resource": {"name": "steps", "type": "int"},
            "metric": {"name": "loss", "optimization": "minimize"},
            "params": {"x": {"kind": "uniform", "value": [0, 1]}},
        },
        "component": {
            "inputs": [
                {"name": "x", "type": "float"},
                {"name": "steps", "type": "int"},
                {"name": "log", "type": "str", "isOptional": True, "value": str(log)},
                {"name": "mode", "type": "str", "isOptional": True, "value": mode},
                {"name": "sleep", "type": "float", "isOptional": True, "value": sleep},
                {"name": "fail_above", "type": "float", "isOptional": True, "value": fail_above},
                {
                    "name": "hold",
                    "type": "str",
                    "isOptional": True,
                    "value": str(hold) if hold is not None else "",
                },
                {
                    "name": "fail_once",
                    "type": "str",
                    "isOptional": True,
                    "value": "1" if fail_once else "0",
                },
            ],
            "container": {
                "command": [sys.executable, TRIAL_PROGRAM],
                "args": [
                    "--x={{ x }}",
                    "--steps={{ steps }}",
                    "--log={{ log }}",
                    "--mode={{ mode }}",
                    "--sleep={{ sleep }}",
                    "--fail_above={{ fail_above }}",
                    "--fail_once={{ fail_once }}",
                    "--hold={{ hold }}",
                ],
            },
        },
    }
    if concurrency is not None:
        spec["matrix"]["concurrency"] = concurrency
    if max_retries:
        spec["termination"] = {"maxRetries": max_retries}
    return yaml.safe_dump(spec)


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def max_overlap(entries: list[dict[str, Any]]) -> int:
    """The most trial processes alive at once, from their own start/end records."""
    points = sorted((e["t"], 1 if e["what"] == "start" else -1) for e in entries)
    now = peak = 0
    for _, delta in sorted(points, key=lambda p: (p[0], p[1])):
        now += delta
        peak = max(peak, now)
    return peak


@dataclass
class Live:
    url: str
    running: Running
    client: httpx.AsyncClient
    db: Path

    async def wait_finished(self, sweep_id: str, within: float = 60.0) -> dict[str, Any]:
        # Polling, as a user of the API would; the SSE stream has its own tests.
        with anyio.fail_after(within):
            while True:
                detail = (await self.client.get(f"/v1/sweeps/{sweep_id}")).json()
                if detail["status"] not in ("running", "stopping"):
                    return detail
                await anyio.sleep(0.1)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    db = tmp_path / "hbd.db"
    async with anyio.create_task_group() as tg:
        opts = DaemonOptions(db=db, port=0, local_slots=4, workdir=tmp_path / "executor")
        running = await tg.start(serve_daemon, opts)
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as client:
            yield Live(running.url, running, client, db)
        tg.cancel_scope.cancel()
