"""Starting, killing and inspecting the daemon and agent processes of the crash tests.

Everything runs as real subprocesses, each the leader of its own session, on
127.0.0.1 ports chosen free; ``Proc.kill`` kills the whole process group with
SIGKILL (a crash, not a shutdown), and every test stops what it started in a
``finally``. The database is read afterwards with plain ``sqlite3``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

import hbd
from hbd.store.db import FAULT_EXIT_ENV, FAULT_EXIT_STATUS

REPO_ROOT = str(Path(hbd.__file__).resolve().parent.parent)
# A daemon or agent must be serving within this (imports take ~0.6 s).
START_TIMEOUT = 15.0
# Processes are given this long to exit after SIGTERM before the test fails.
SIGTERM_EXIT_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL the process group (the process and anything it left in its session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def spawn(
    args: list[str], log: Path, env: dict[str, str] | None = None, prefix: list[str] | None = None
) -> Proc:
    """``python -m tests.crash.procs ARGS``, after ``prefix`` (a wrapper such as setpriv)."""
    full_env = {k: v for k, v in os.environ.items() if k != FAULT_EXIT_ENV}
    full_env.update({"PYTHONPATH": REPO_ROOT, **(env or {})})
    out = log.open("ab")
    try:
        popen = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "tests.crash.procs", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    finally:
        out.close()
    return Proc(popen, log)


def spawn_cli(args: list[str], log: Path, *, cwd: Path, env: dict[str, str] | None = None) -> Proc:
    """``python -m hbd ARGS`` as a user would run it, in ``cwd``, in its own session."""
    # No HBD_* setting of the environment running the tests leaks into the command.
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HBD_")}
    full_env.update({"PYTHONPATH": REPO_ROOT, **(env or {})})
    out = log.open("ab")
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", "hbd", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        out.close()
    return Proc(popen, log)


def start_agent(workdir: Path, port: int, slots: int = 4) -> Proc:
    proc = spawn(
        ["agent", "--port", str(port), "--workdir", str(workdir), "--slots", str(slots)],
        workdir.parent / f"agent-{port}.log",
    )
    wait_serving(proc, f"http://127.0.0.1:{port}/v1/health")
    return proc


def start_daemon(
    db: Path,
    port: int,
    *,
    executor: str,
    spec: Path,
    sweep_id: str,
    fault_after: int | None = None,
    wait: bool = True,
    prefix: list[str] | None = None,
) -> Proc:
    env = {FAULT_EXIT_ENV: str(fault_after)} if fault_after is not None else None
    args = [
        "daemon",
        "--db",
        str(db),
        "--port",
        str(port),
        "--executor",
        executor,
        "--spec",
        str(spec),
        "--sweep-id",
        sweep_id,
    ]
    proc = spawn(args, db.with_suffix(".log"), env, prefix)
    if wait:
        wait_serving(proc, f"http://127.0.0.1:{port}/healthz")
    return proc


def wait_serving(proc: Proc, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not proc.alive():
            return  # it may have finished (or crashed on purpose) already; callers check
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"{url} not serving after {START_TIMEOUT} s:\n{proc.output()}")


@contextlib.contextmanager
def stopping(procs: list[Proc]) -> Iterator[list[Proc]]:
    """Kill every process in ``procs`` (which the body may append to) on the way out."""
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()


# ---- what a finished database says ----


def strip(sweep_id: str, trial_id: str | None) -> str | None:
    return None if trial_id is None else trial_id.removeprefix(sweep_id + "-")


@dataclass
class Outcome:
    """The parts of a finished sweep that must not depend on crashes."""

    status: str
    best: str | None
    best_metric: float | None
    trials: dict[
        str, tuple[str, str, float | None, str | None]
    ]  # id -> config, status, metric, parent
    promotions: dict[tuple[int, int], list[str]]  # (bracket, rung) -> promoted ids

    def same_as(self, other: Outcome) -> None:
        assert self.trials == other.trials
        assert self.promotions == other.promotions
        assert (self.status, self.best, self.best_metric) == (
            other.status,
            other.best,
            other.best_metric,
        )


def outcome(db: Path, sweep_id: str) -> Outcome:
    """Read a finished sweep back, checking the log's invariants on the way."""
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs = [r[0] for r in con.execute("SELECT seq FROM events ORDER BY seq")]
        assert seqs == list(range(1, len(seqs) + 1)), "event seqs have a gap"
        terminal = Counter(
            r[0]
            for r in con.execute(
                "SELECT trial_id FROM events WHERE type IN ('trial.succeeded','trial.failed','trial.cancelled')"
            )
        )
        scheduled = Counter(
            r[0] for r in con.execute("SELECT trial_id FROM events WHERE type = 'trial.scheduled'")
        )
        assert set(terminal) == set(scheduled), "a scheduled trial has no result"
        assert set(terminal.values()) == {1} and set(scheduled.values()) == {1}
        status, best, best_metric = con.execute(
            "SELECT status, best_trial_id, best_metric FROM sweeps WHERE id = ?", (sweep_id,)
        ).fetchone()
        trials = {
            strip(sweep_id, tid): (config, st, metric, strip(sweep_id, parent))
            for tid, config, st, metric, parent in con.execute(
                "SELECT id, config, status, metric, parent FROM trials WHERE sweep_id = ?",
                (sweep_id,),
            )
        }
        promotions = {}
        for (payload,) in con.execute(
            "SELECT payload FROM events WHERE type = 'rung.decided' ORDER BY seq"
        ):
            p = json.loads(payload)
            promotions[(p["bracket"], p["rung"])] = [strip(sweep_id, t) for t in p["promoted"]]
    finally:
        con.close()
    return Outcome(status, strip(sweep_id, best), best_metric, trials, promotions)  # type: ignore[arg-type]


def commits_of(db: Path) -> int:
    """Write transactions an uninterrupted daemon made: one per distinct append time, plus the migration."""
    con = sqlite3.connect(db)
    try:
        return 1 + int(con.execute("SELECT count(DISTINCT at) FROM events").fetchone()[0])
    finally:
        con.close()


def trial_starts(log: Path) -> Counter[str]:
    """How many processes each trial id started (the trial program logs each start)."""
    if not log.exists():
        return Counter()
    return Counter(
        json.loads(line)["trial"]
        for line in log.read_text().splitlines()
        if line.strip() and json.loads(line)["what"] == "start"
    )


__all__ = [
    "FAULT_EXIT_STATUS",
    "Outcome",
    "Proc",
    "commits_of",
    "expected_outcome",
    "free_port",
    "outcome",
    "spawn_cli",
    "start_agent",
    "start_daemon",
    "stopping",
    "trial_starts",
]


def expected_outcome(spec_text: str, sweep_id: str) -> Outcome:
    """What an uninterrupted sweep of the e2e trial program gives, from the pure core alone.

    The trial program reports loss = (x - 0.3)**2 + 1/steps; fed to the
    machine in any order (rungs are decided at a barrier) this gives the
    daemon's outcome exactly, so a long sweep needs no reference run.
    """
    from collections import deque

    from hbd.core.events import Begin, RungDecided, StartTrial, SweepFinished, TrialSucceeded
    from hbd.core.spec import load_spec
    from hbd.core.sweep import SweepMachine
    from hbd.store.projections import dumps

    spec = load_spec(spec_text)
    machine = SweepMachine.for_spec(spec, sweep_id=sweep_id, seed=int(spec.matrix.seed or 0))
    todo = deque(machine.handle(Begin()))
    trials: dict[str, tuple[str, str, float | None, str | None]] = {}
    promotions: dict[tuple[int, int], list[str]] = {}
    finished: SweepFinished | None = None
    while todo:
        d = todo.popleft()
        if isinstance(d, StartTrial):
            loss = (float(d.config["x"]) - 0.3) ** 2 + 1.0 / int(d.resource)
            key = strip(sweep_id, d.trial_id)
            assert key is not None
            trials[key] = (dumps(dict(d.config)), "succeeded", loss, strip(sweep_id, d.parent))
            todo.extend(machine.handle(TrialSucceeded(trial_id=d.trial_id, metrics={"loss": loss})))
        elif isinstance(d, RungDecided):
            promotions[(d.bracket, d.rung)] = [strip(sweep_id, t) or "" for t in d.promoted]
        elif isinstance(d, SweepFinished):
            finished = d
    assert finished is not None and finished.best is not None
    return Outcome(
        finished.status,
        strip(sweep_id, finished.best.trial_id),
        finished.best.metric,
        trials,
        promotions,
    )
