"""`hbd serve`, `hbd executor` and `hbd doctor` as an operator runs them: real processes."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import yaml

from hbd.cli import main
from hbd.store.log import open_store
from hbd.store.schema import CURRENT_VERSION
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.slow

TOKEN = "svc-token-" + secrets.token_hex(16)
STOP_SECONDS = 10


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    directory = tempfile.mkdtemp(prefix="hbd-svc-", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    try:
        yield sock
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)


def messages(sock: socket.socket) -> dict[str, str]:
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())


def wait_for(sock: socket.socket, key: str) -> dict[str, str]:
    while True:
        msg = messages(sock)
        if key in msg:
            return msg


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HBD_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    }
    env.update(extra)
    return env


def start(
    procs: list[subprocess.Popen[bytes]], *args: str, env: dict[str, str], stderr: Path
) -> subprocess.Popen[bytes]:
    with stderr.open("wb") as err:
        p = subprocess.Popen(
            [sys.executable, "-m", "hbd", *args], env=env, stdout=subprocess.DEVNULL, stderr=err
        )
    procs.append(p)
    return p


def stop(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    p.send_signal(sig)
    return p.wait(timeout=STOP_SECONDS)


def test_serve_notifies_systemd_answers_health_and_stops_on_sigterm(
    tmp_path: Path, notify_socket: socket.socket, procs: list[subprocess.Popen[bytes]]
) -> None:
    # 4 s: pings every 2 s, the first at once; each health check gets 1 s, which
    # a loaded machine needs (with 0.4 s the check's 0.1 s was missed for 20 s).
    env = clean_env(NOTIFY_SOCKET=notify_socket.getsockname(), WATCHDOG_USEC="4000000")
    p = start(
        procs,
        "serve",
        "--port",
        "0",
        "--db",
        str(tmp_path / "state" / "hbd.db"),
        env=env,
        stderr=tmp_path / "err.log",
    )
    ready = wait_for(notify_socket, "READY")
    assert ready["READY"] == "1"
    url = ready["STATUS"].removeprefix("serving on ")
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    assert (tmp_path / "state" / "hbd.db").exists()  # READY came after the database was open
    assert wait_for(notify_socket, "WATCHDOG")["WATCHDOG"] == "1"
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    assert wait_for(notify_socket, "STOPPING")["STOPPING"] == "1"
    assert p.wait(timeout=STOP_SECONDS) == 0
    assert time.monotonic() - t0 < 5
    lines = [json.loads(line) for line in (tmp_path / "err.log").read_text().splitlines()]
    serving = next(line for line in lines if line["event"] == "hbd daemon serving")
    assert serving["url"] == url  # the listening URL is in the log


def test_executor_notifies_and_stops_on_sigint(
    tmp_path: Path, notify_socket: socket.socket, procs: list[subprocess.Popen[bytes]]
) -> None:
    env = clean_env(NOTIFY_SOCKET=notify_socket.getsockname(), HBD_TOKEN=TOKEN)
    p = start(
        procs,
        "executor",
        "--port",
        "0",
        "--slots",
        "2",
        "--workdir",
        str(tmp_path / "w"),
        env=env,
        stderr=tmp_path / "err.log",
    )
    status = wait_for(notify_socket, "READY")["STATUS"]
    port = int(status.split("port ")[1].split()[0])
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/v1/health").json()["slots"] == 2
    assert httpx.get(f"{url}/v1/trials").status_code == 401
    assert (
        httpx.get(f"{url}/v1/trials", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
        == 200
    )
    assert stop(p, signal.SIGINT) == 0
    assert TOKEN not in (tmp_path / "err.log").read_text()


def test_token_protected_daemon_runs_a_sweep_and_never_logs_the_token(
    tmp_path: Path, notify_socket: socket.socket, procs: list[subprocess.Popen[bytes]]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = clean_env(NOTIFY_SOCKET=notify_socket.getsockname())
    p = start(
        procs,
        "serve",
        "--port",
        "0",
        "--db",
        str(tmp_path / "hbd.db"),
        "--local-executor",
        "2",
        "--token-file",
        str(token_file),
        "--log-level",
        "debug",
        env=env,
        stderr=tmp_path / "err.log",
    )
    url = wait_for(notify_socket, "READY")["STATUS"].removeprefix("serving on ")
    good = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=10) as http:
        spec = sweep_yaml(tmp_path / "trials.jsonl")
        assert http.post("/v1/sweeps", content=spec).status_code == 401
        assert (
            http.post(
                "/v1/sweeps", content=spec, headers={"Authorization": "Bearer nope-nope-nope-nope"}
            ).status_code
            == 401
        )
        assert http.get("/v1/sweeps", headers=good).json() == []  # nothing was stored
        sweep_id = http.post("/v1/sweeps", content=spec, headers=good).json()["id"]
        deadline = time.monotonic() + 60
        while http.get(f"/v1/sweeps/{sweep_id}", headers=good).json()["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert http.get(f"/v1/sweeps/{sweep_id}", headers=good).json()["status"] == "succeeded"
    assert stop(p) == 0
    text = (tmp_path / "err.log").read_text()
    assert TOKEN not in text
    lines = [json.loads(line) for line in text.splitlines()]  # JSON lines: stderr is not a terminal
    trial_lines = [line for line in lines if "trial_id" in line]
    assert trial_lines and all(line["sweep_id"] == sweep_id for line in trial_lines)


SLOW_TO_DIE = textwrap.dedent(
    """
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(sys.argv[1], "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(120)
    """
)


def test_a_second_signal_exits_at_once(
    tmp_path: Path, notify_socket: socket.socket, procs: list[subprocess.Popen[bytes]]
) -> None:
    program = tmp_path / "stubborn.py"
    program.write_text(SLOW_TO_DIE)
    pids = tmp_path / "pids"
    spec = yaml.safe_load(sweep_yaml(tmp_path / "unused.jsonl"))
    spec["component"]["container"] = {"command": [sys.executable, str(program), str(pids)]}
    # Only an agent that stops its trials waits out their grace period.
    env = clean_env(NOTIFY_SOCKET=notify_socket.getsockname(), HBD_KEEP_TRIALS_ON_EXIT="false")
    p = start(
        procs,
        "serve",
        "--port",
        "0",
        "--db",
        str(tmp_path / "hbd.db"),
        "--local-executor",
        "1",
        env=env,
        stderr=tmp_path / "err.log",
    )
    url = wait_for(notify_socket, "READY")["STATUS"].removeprefix("serving on ")
    try:
        assert httpx.post(f"{url}/v1/sweeps", content=yaml.safe_dump(spec)).status_code == 201
        deadline = time.monotonic() + 20
        while not pids.exists() or not pids.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)  # the local executor now waits out the trial's grace period
        time.sleep(1.0)
        assert p.poll() is None
        t0 = time.monotonic()
        assert stop(p) == 128 + signal.SIGTERM
        assert time.monotonic() - t0 < 3
    finally:
        for pid in pids.read_text().split() if pids.exists() else []:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_serve_with_port_in_use_fails_with_one_line(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = start(
            procs,
            "serve",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "hbd.db"),
            env=clean_env(),
            stderr=tmp_path / "err.log",
        )
        assert p.wait(timeout=STOP_SECONDS) == 1
    err = (tmp_path / "err.log").read_text()
    assert "error: hbd serve failed" in err and "Traceback" not in err


# ---------------------------------------------------------------- doctor


@pytest.fixture
def doctor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HBD_"):
            monkeypatch.delenv(name)
    with socket.socket() as s:  # a port where no daemon listens
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HBD_PORT", str(s.getsockname()[1]))
    monkeypatch.setenv("HBD_LOCAL_EXECUTOR", "1")


async def _create_db(path: Path) -> None:
    store = await open_store(path)
    await store.close()


def test_doctor_on_a_good_database(
    tmp_path: Path, doctor_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "hbd.db"
    anyio.run(_create_db, db)
    assert main(["doctor", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "ok    database: " in out and "integrity ok" in out
    assert f"schema version {CURRENT_VERSION} (current)" in out
    assert "WAL mode" in out
    assert "FAIL" not in out


def test_doctor_on_a_broken_database(
    tmp_path: Path, doctor_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "hbd.db"
    db.write_bytes(b"this is not a database" * 100)
    assert main(["doctor", "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  database:" in out and "fix: " in out


def test_doctor_reports_unreachable_executors_and_missing_token(
    tmp_path: Path,
    doctor_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HBD_HOST", "0.0.0.0")
    assert main(["doctor", "--db", str(tmp_path / "new.db"), "--executor", dead]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  executor {dead}: unreachable" in out
    assert "FAIL  token: none, but host 0.0.0.0" in out
    assert "database: " in out and "does not exist yet" in out


def test_doctor_passes_against_a_live_executor(
    tmp_path: Path,
    doctor_env: None,
    notify_socket: socket.socket,
    procs: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = clean_env(NOTIFY_SOCKET=notify_socket.getsockname(), HBD_TOKEN=TOKEN)
    p = start(
        procs,
        "executor",
        "--port",
        "0",
        "--workdir",
        str(tmp_path / "w"),
        env=env,
        stderr=tmp_path / "err.log",
    )
    status = wait_for(notify_socket, "READY")["STATUS"]
    url = f"http://127.0.0.1:{int(status.split('port ')[1].split()[0])}"
    db = tmp_path / "hbd.db"
    anyio.run(_create_db, db)
    monkeypatch.setenv("HBD_TOKEN", TOKEN)
    code = main(["doctor", "--db", str(db), "--executor", url])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"ok    executor {url}: hbd " in out and "1 slot(s)" in out
    assert "FAIL" not in out
    assert stop(p) == 0
