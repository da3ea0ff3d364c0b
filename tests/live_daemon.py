"""A real daemon (local executor, real trial processes on 127.0.0.1) in a thread.

For tests of synchronous consumers (``hbd.Client``, the export command, a
browser): the daemon runs on its own event loop in a blocking portal's thread,
the test talks to it over HTTP as a user would. Leaving the context cancels
the daemon, which stops its trial processes, and joins the thread.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from anyio.from_thread import start_blocking_portal

from hbd.api.server import DaemonOptions, serve_daemon

CURVE_TRIAL = str(Path(__file__).with_name("curve_trial.py"))


@contextmanager
def daemon_in_thread(tmp_path: Path, *, token: str | None = None, slots: int = 4) -> Iterator[str]:
    """Yields the daemon's URL."""
    opts = DaemonOptions(
        db=tmp_path / "hbd.db",
        port=0,
        local_slots=slots,
        workdir=tmp_path / "executor",
        token=token,
    )
    with start_blocking_portal("asyncio") as portal:
        future, running = portal.start_task(serve_daemon, opts)
        try:
            yield running.url
        finally:
            future.cancel()


def curve_spec(
    *,
    max_iterations: int = 9,
    sleep: float = 0.0,
    seed: int = 7,
    concurrency: int | None = 4,
    fail_above: float = 2.0,
) -> dict[str, Any]:
    """A sweep of ``curve_trial.py``: params x (uniform), opt (choice), width (int
    range); every trial reports its loss at each step up to its resource."""
    spec: dict[str, Any] = {
        "version": 1.1,
        "kind": "operation",
        "matrix": {
            "kind": "hyperband",
            "maxIterations": max_iterations,
            "eta": 3,
            "seed": seed,
            "resource": {"name": "steps", "type": "int"},
            "metric": {"name": "loss", "optimization": "minimize"},
            "params": {
                "x": {"kind": "uniform", "value": [0, 1]},
                "opt": {"kind": "choice", "value": ["sgd", "adam"]},
                "width": {"kind": "range", "value": [8, 64, 8]},
            },
        },
        "component": {
            "inputs": [
                {"name": "x", "type": "float"},
                {"name": "opt", "type": "str"},
                {"name": "width", "type": "int"},
                {"name": "steps", "type": "int"},
                {"name": "sleep", "type": "float", "isOptional": True, "value": sleep},
                {"name": "fail_above", "type": "float", "isOptional": True, "value": fail_above},
            ],
            "container": {
                "command": [sys.executable, CURVE_TRIAL],
                "args": [
                    "{{ x }}",
                    "{{ opt }}",
                    "{{ width }}",
                    "{{ steps }}",
                    "{{ sleep }}",
                    "{{ fail_above }}",
                ],
            },
        },
    }
    if concurrency is not None:
        spec["matrix"]["concurrency"] = concurrency
    return spec


def curve_yaml(**kwargs: Any) -> str:
    return yaml.safe_dump(curve_spec(**kwargs))
