"""The embedded default: `hbd serve --local-executor` restarted mid-sweep resumes exactly.

SIGTERM leaves the in-process agent's trials running; the next `hbd serve` on
the same database adopts them (the agent finds them by pid in its workdir),
and the sweep ends as an uninterrupted one would, every trial run once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.crash.harness import (
    REPO_ROOT,
    SIGTERM_EXIT_TIMEOUT,
    expected_outcome,
    free_port,
    outcome,
    trial_starts,
)
from tests.e2e.conftest import read_log, sweep_yaml

pytestmark = pytest.mark.slow


def serve(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HBD_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hbd",
                "serve",
                "--port",
                str(port),
                "--db",
                str(db),
                "--local-executor",
                "4",
                "--log-format",
                "json",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )


def wait_until(predicate, what: str, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_sigterm_and_restart_of_hbd_serve_resumes_the_sweep_exactly(tmp_path: Path) -> None:
    trials_log = tmp_path / "trials.jsonl"
    # The first trials are held (see trial_program.py's --hold) until the second
    # `hbd serve` is up: running across the restart on any machine, no fixed sleep.
    hold = tmp_path / "hold"
    hold.touch()
    text = sweep_yaml(trials_log, concurrency=4, hold=hold)
    db, port = tmp_path / "hbd.db", free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(serve(db, port, tmp_path / "serve-1.log"))
        wait_until(lambda: healthy(url), "hbd serve did not come up")
        assert (
            httpx.post(f"{url}/v1/sweeps", params={"id": "local"}, content=text).status_code == 201
        )
        wait_until(lambda: len(read_log(trials_log)) >= 4, "four trials running")
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(SIGTERM_EXIT_TIMEOUT) == 0, (tmp_path / "serve-1.log").read_text()[
            -3000:
        ]
        started = {e["pid"] for e in read_log(trials_log) if e["what"] == "start"}
        ended = {e["pid"] for e in read_log(trials_log) if e["what"] == "end"}
        left = started - ended
        assert left, "trials were running when the daemon stopped"
        assert all(os.path.exists(f"/proc/{pid}") for pid in left), (
            "SIGTERM must leave trials running"
        )

        procs.append(serve(db, port, tmp_path / "serve-2.log"))
        wait_until(lambda: healthy(url), "the second hbd serve did not come up")
        assert all(os.path.exists(f"/proc/{pid}") for pid in left), "adopted while running"
        hold.unlink()

        def finished() -> bool:
            return httpx.get(f"{url}/v1/sweeps/local", timeout=5).json()["status"] != "running"

        wait_until(finished, "the resumed sweep did not finish", seconds=90)
    finally:
        hold.unlink(missing_ok=True)
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for entry in read_log(trials_log):
            try:
                os.killpg(entry["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    starts = trial_starts(trials_log)
    assert set(starts.values()) == {1}, f"a trial ran twice: {starts.most_common(3)}"
    outcome(db, "local").same_as(expected_outcome(text, "local"))
