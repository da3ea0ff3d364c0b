"""Shared pieces of the executor tests: a trial script and a running agent."""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx

import hbd
from hbd.api.agent_routes import serve_agent

REPO_ROOT = str(Path(hbd.__file__).resolve().parent.parent)

# One script, several behaviours chosen by --mode. Every start appends a line
# to $MARKER so tests can count how often a trial really ran.
TRIAL_SCRIPT = r"""
import json, os, subprocess, sys, time
import hbd

opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
mode = opts.get("mode", "ok")
with open(os.environ["MARKER"], "a") as f:
    f.write(os.environ["HBD_TRIAL_ID"] + "\n")
if "dump" in opts:
    with open(opts["dump"], "w") as f:
        json.dump({"argv": sys.argv, "env": dict(os.environ)}, f)
if "readckpt" in opts:  # what the parent's checkpoint held, or MISSING
    path = os.path.join(os.environ.get("HBD_RESUME_FROM", "/nonexistent"), "state.txt")
    with open(opts["readckpt"], "w") as f:
        f.write(open(path).read() if os.path.exists(path) else "MISSING")
if "ckpt" in opts:  # a checkpoint of --ckpt's text, --ckptbytes long if given
    text = opts["ckpt"] * int(opts.get("ckptbytes", "1"))
    with open(os.path.join(os.environ["HBD_CHECKPOINT_DIR"], "state.txt"), "w") as f:
        f.write(text)
if mode == "ok":
    for step in range(int(opts.get("steps", "3"))):
        hbd.report(loss=1.0 / (step + 1), step=step)
elif mode == "fail":
    hbd.report(loss=0.5)
    print("something broke: boom", file=sys.stderr)
    sys.exit(3)
elif mode == "nometric":
    hbd.report(accuracy=0.9)
elif mode == "sleep":
    hbd.report(loss=0.25)
    time.sleep(float(opts.get("seconds", "60")))
elif mode == "failslow":  # reports its metric, waits for --go to exist, exits 3
    hbd.report(loss=0.5)
    while not os.path.exists(opts["go"]):
        time.sleep(0.02)
    sys.exit(3)
elif mode == "daemonize":  # double fork + setsid: a grandchild in a session of its own
    code = (
        "import os, sys, time; os.setsid();"
        "open(sys.argv[1] + '.tmp', 'w').write(f'{os.getpid()} {os.getsid(0)}');"
        "os.rename(sys.argv[1] + '.tmp', sys.argv[1]); time.sleep(120)"
    )
    launcher = (
        "import subprocess, sys;"
        "subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]], close_fds=True)"
    )
    subprocess.run([sys.executable, "-c", launcher, code, opts["pids"]], check=True)
    while not os.path.exists(opts["pids"]):
        time.sleep(0.02)
    hbd.report(loss=0.1)
    time.sleep(float(opts.get("seconds", "0")))
elif mode == "flood":  # writes --mb MiB to stdout as fast as it can, numbered lines last
    block = b"x" * 1023 + b"\n"
    out = sys.stdout.buffer
    out.write(b"FIRST LINE\n")
    for _ in range(int(opts.get("mb", "16")) * 1024):
        out.write(block)
    out.write(b"LAST LINE\n")
    out.flush()
    sys.stderr.write("ERR TAIL\n")
    hbd.report(loss=0.2)
elif mode == "spawn":
    child = subprocess.Popen(["sleep", "60"])
    with open(opts["pids"], "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    time.sleep(60)
"""


def write_script(tmp_path: Path) -> Path:
    path = tmp_path / "trial.py"
    path.write_text(TRIAL_SCRIPT)
    return path


def submission(
    tmp_path: Path, trial_id: str, *args: str, metric: str | None = "loss", **extra: Any
) -> dict[str, Any]:
    """A submission body running the trial script with ``args``."""
    script = tmp_path / "trial.py"
    if not script.exists():
        write_script(tmp_path)
    body: dict[str, Any] = {
        "id": trial_id,
        "sweep_id": "sweep-1",
        "command": [sys.executable, str(script), "--steps={{ num_steps }}", *args],
        "params": {"lr": 0.01},
        "resource": {"name": "num_steps", "value": 3},
        "env": {"MARKER": str(tmp_path / "starts.txt"), "PYTHONPATH": REPO_ROOT},
        "metric": metric,
    }
    body.update(extra)
    return body


def starts(tmp_path: Path, trial_id: str) -> int:
    marker = tmp_path / "starts.txt"
    if not marker.exists():
        return 0
    return marker.read_text().split().count(trial_id)


@contextlib.asynccontextmanager
async def running_agent(
    workdir: Path, *, slots: int = 2, token: str | None = None, **kwargs: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """serve_agent on 127.0.0.1:0 and a client for it; everything stops on exit."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            functools.partial(serve_agent, "127.0.0.1", 0, workdir, slots, token, **kwargs)
        )
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30.0
            ) as client:
                yield client
        finally:
            tg.cancel_scope.cancel()


async def wait_for(
    client: httpx.AsyncClient, trial_id: str, *, timeout: float = 20.0, finished: bool = True
) -> dict[str, Any]:
    """Poll a trial until it is finished (or, with finished=False, has metrics)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/v1/trials/{trial_id}")
        response.raise_for_status()
        status: dict[str, Any] = response.json()
        done = status["state"] != "running" if finished else bool(status["metrics"])
        if done:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"trial {trial_id} still {status}")
        await anyio.sleep(0.05)


async def wait_until(predicate: Any, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await anyio.sleep(0.05)
