"""Helpers of the checkpoint tests: the spec, polling the API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml

TRIAL = str(Path(__file__).with_name("trial.py"))
# Bytes of each trial's checkpoint: small, and distinct from any other file size.
CHECKPOINT_BYTES = 4321


def ckpt_spec(
    *,
    max_iterations: int,
    concurrency: int | None = None,
    gate: Path | None = None,
    gated: str = "",
) -> str:
    args = ["--steps={{ steps }}", f"--size={CHECKPOINT_BYTES}"]
    if gate is not None:
        args += [f"--gate={gate}", f"--gated={gated}"]
    spec: dict[str, Any] = {
        "version": 1.1,
        "kind": "operation",
        "matrix": {
            "kind": "hyperband",
            "maxIterations": max_iterations,
            "eta": 3,
            "seed": 5,
            "resume": True,
            "resource": {"name": "steps", "type": "int"},
            "metric": {"name": "loss", "optimization": "minimize"},
            "params": {"x": {"kind": "uniform", "value": [0, 1]}},
        },
        "component": {
            "inputs": [{"name": "x", "type": "float"}, {"name": "steps", "type": "int"}],
            "container": {"command": [sys.executable, TRIAL], "args": args},
        },
    }
    if concurrency is not None:
        spec["matrix"]["concurrency"] = concurrency
    return yaml.safe_dump(spec)


async def wait_for(client: httpx.AsyncClient, path: str, done: Any, within: float = 120.0) -> Any:
    """GET ``path`` every 0.1 s until ``done(json)``; its last answer."""
    with anyio.fail_after(within):
        while True:
            body = (await client.get(path)).json()
            if done(body):
                return body
            await anyio.sleep(0.1)


def lineage(trials: list[dict[str, Any]], best: str) -> set[str]:
    by_id = {t["id"]: t for t in trials}
    out: set[str] = set()
    current: str | None = best
    while current is not None and current not in out:
        out.add(current)
        current = by_id[current]["parent"]
    return out


def on_disk(root: Path) -> dict[str, int]:
    """Checkpoint directories under ``root`` and the bytes of their files."""
    if not root.is_dir():
        return {}
    return {
        d.name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".")
    }
