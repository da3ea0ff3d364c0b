"""One daemon per database and one agent per workdir, with the real commands.

Two ``hbd run`` in one folder, or ``hbd run`` beside ``hbd serve`` on the same
file, used to take over each other's sweeps (trials dispatched twice, both
hung). The second process must exit at once with status 1 and one line that
names the file and the holder's pid, leaving the first undisturbed; and a
holder killed with -9 must leave no stale lock behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.crash.harness import Proc, free_port, spawn_cli, stopping, wait_serving
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.slow

# A refused second process exits this fast (imports take ~1 s on a loaded 2-core box).
REFUSAL_TIMEOUT = 20.0


def _refused(proc: Proc, what: Path, holder: int, *, service: bool = False) -> None:
    """``proc`` exited 1 with one line naming ``what`` and ``holder``.

    A service (serve, executor) also writes the failure to its structured log,
    which is the journal's copy of the same line.
    """
    assert proc.wait(REFUSAL_TIMEOUT) == 1, proc.output()
    lines = [line for line in proc.output().splitlines() if line.strip()]
    assert "Traceback" not in proc.output()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and len(lines) == (2 if service else 1), lines
    assert str(what.resolve()) in errors[0] and f"pid {holder}" in errors[0], errors[0]


@contextlib.contextmanager
def _releasing(hold: Path) -> Iterator[None]:
    """Release held trials on the way out, also when the test fails."""
    try:
        yield
    finally:
        hold.unlink(missing_ok=True)


def _serving(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_second_daemon_on_one_database_exits_naming_the_holder(tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    # Its trials are held (see trial_program.py's --hold) until the refusals are
    # checked: the first cannot finish its sweep meanwhile, however slow they are.
    hold = tmp_path / "hold"
    hold.touch()
    spec.write_text(sweep_yaml(tmp_path / "trials.jsonl", hold=hold))
    db = tmp_path / ".hbd" / "hbd.db"
    port = free_port()
    with stopping([]) as procs, _releasing(hold):
        # `hbd run` in this folder: its database is .hbd/hbd.db by default.
        first = spawn_cli(
            ["run", str(spec), "--port", str(port)], tmp_path / "first.log", cwd=tmp_path
        )
        procs.append(first)
        wait_serving(first, f"http://127.0.0.1:{port}/healthz")
        assert first.alive(), first.output()

        second = spawn_cli(["run", str(spec)], tmp_path / "second.log", cwd=tmp_path)
        procs.append(second)
        _refused(second, db, first.popen.pid)

        serve = spawn_cli(
            ["serve", "--db", str(db), "--port", str(free_port()), "--local-executor", "1"],
            tmp_path / "serve.log",
            cwd=tmp_path,
        )
        procs.append(serve)
        _refused(serve, db, first.popen.pid, service=True)

        # The first is undisturbed: still serving, and it finishes its sweep.
        assert _serving(f"http://127.0.0.1:{port}/healthz")
        assert first.alive(), first.output()
        hold.unlink()
        assert first.wait(90) == 0, first.output()


def test_a_killed_daemon_leaves_no_stale_lock(tmp_path: Path) -> None:
    db = tmp_path / "hbd.db"
    with stopping([]) as procs:
        port = free_port()
        first = spawn_cli(
            ["serve", "--db", str(db), "--port", str(port)], tmp_path / "a.log", cwd=tmp_path
        )
        procs.append(first)
        wait_serving(first, f"http://127.0.0.1:{port}/healthz")
        first.kill()  # kill -9: no cleanup ran
        port = free_port()
        again = spawn_cli(
            ["serve", "--db", str(db), "--port", str(port)], tmp_path / "b.log", cwd=tmp_path
        )
        procs.append(again)
        wait_serving(again, f"http://127.0.0.1:{port}/healthz")
        assert again.alive() and _serving(f"http://127.0.0.1:{port}/healthz"), again.output()


def test_a_second_agent_on_one_workdir_exits_naming_the_holder(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    port = free_port()
    with stopping([]) as procs:
        first = spawn_cli(
            ["executor", "--port", str(port), "--workdir", str(workdir)],
            tmp_path / "first.log",
            cwd=tmp_path,
        )
        procs.append(first)
        wait_serving(first, f"http://127.0.0.1:{port}/v1/health")
        second = spawn_cli(
            ["executor", "--port", str(free_port()), "--workdir", str(workdir)],
            tmp_path / "second.log",
            cwd=tmp_path,
        )
        procs.append(second)
        _refused(second, workdir, first.popen.pid, service=True)
        # A daemon whose embedded agent would share that workdir is refused too.
        embedded = spawn_cli(
            ["serve", "--db", str(tmp_path / "x.db"), "--port", str(free_port())],
            tmp_path / "embedded.log",
            cwd=tmp_path,
            env={"HBD_LOCAL_EXECUTOR": "1", "HBD_LOCAL_WORKDIR": str(workdir)},
        )
        procs.append(embedded)
        _refused(embedded, workdir, first.popen.pid, service=True)
        assert _serving(f"http://127.0.0.1:{port}/v1/health")
        first.kill()
        third = spawn_cli(
            ["executor", "--port", str(port), "--workdir", str(workdir)],
            tmp_path / "third.log",
            cwd=tmp_path,
        )
        procs.append(third)
        wait_serving(third, f"http://127.0.0.1:{port}/v1/health")
        assert third.alive(), third.output()
