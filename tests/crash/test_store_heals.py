"""A daemon whose database cannot be written says so, and heals by itself once it can.

Before: a daemon started while its database was read-only never wrote again,
even after the file was made writable (SQLite shares one read-only descriptor
per file in a process, and the -shm it created kept the read-only mode): its
sweep was stuck, submits got 503 forever and /healthz said ok throughout.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.crash.harness import (
    expected_outcome,
    free_port,
    outcome,
    start_agent,
    start_daemon,
    stopping,
    trial_starts,
)
from tests.e2e.conftest import read_log, sweep_yaml

pytestmark = pytest.mark.slow

# How long the daemon may take to notice the disk healed: its probe interval
# (2 s) plus a runner's backoff cap (10 s), with room for a loaded machine.
HEAL_TIMEOUT = 40.0


def _unprivileged() -> list[str]:
    """A prefix that makes file modes bind the daemon: root ignores them otherwise."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only mode binds nobody")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def _health(url: str) -> httpx.Response | None:
    try:
        return httpx.get(f"{url}/healthz", timeout=2.0)
    except httpx.HTTPError:
        return None


def test_a_daemon_started_on_a_read_only_database_heals_when_it_becomes_writable(
    tmp_path: Path,
) -> None:
    sweep_id = "ro"
    trials_log = tmp_path / "trials.jsonl"
    text = sweep_yaml(trials_log, max_iterations=9, concurrency=3, sleep=0.5)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    db, port, agent_port = tmp_path / "hbd.db", free_port(), free_port()
    agent_url, url = f"http://127.0.0.1:{agent_port}", f"http://127.0.0.1:{port}"
    with stopping([]) as procs:
        procs.append(start_agent(tmp_path / "agent", agent_port))
        daemon = start_daemon(db, port, executor=agent_url, spec=spec, sweep_id=sweep_id)
        procs.append(daemon)
        deadline = time.monotonic() + 30
        while sum(e["what"] == "end" for e in read_log(trials_log)) < 3:
            assert time.monotonic() < deadline, daemon.output()
            time.sleep(0.05)
        daemon.kill()  # mid-sweep; its trials go on on the agent

        os.chmod(db, 0o444)
        daemon = start_daemon(
            db,
            port,
            executor=agent_url,
            spec=spec,
            sweep_id=sweep_id,
            wait=False,
            prefix=_unprivileged(),
        )
        procs.append(daemon)
        deadline = time.monotonic() + 30
        while (response := _health(url)) is None or response.status_code != 503:
            assert time.monotonic() < deadline and daemon.alive(), daemon.output()
            time.sleep(0.1)
        body = response.json()
        assert body["status"] == "failing"
        assert "permission denied" in body["reason"] and str(db) in body["reason"], body
        assert "disk I/O error" not in body["reason"]
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert "hbd_store_writable 0.0" in metrics
        failures = [
            float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("hbd_store_write_failures_total ")
        ]
        assert failures and failures[0] >= 1, metrics
        refused = httpx.post(f"{url}/v1/sweeps", content=text, timeout=10)
        assert refused.status_code == 503, refused.text

        os.chmod(db, 0o644)  # the operator fixes the mode; nothing is restarted
        deadline = time.monotonic() + HEAL_TIMEOUT
        while (response := _health(url)) is not None and response.status_code != 200:
            assert time.monotonic() < deadline, (response.text, daemon.output())
            time.sleep(0.2)
        # It resumes by itself: the sweep finishes and the daemon exits.
        assert daemon.wait(90) == 0, daemon.output()

    starts = trial_starts(trials_log)
    assert set(starts.values()) == {1}, starts.most_common(3)
    outcome(db, sweep_id).same_as(expected_outcome(text, sweep_id))
    assert "cannot write the event log" in daemon.output()
