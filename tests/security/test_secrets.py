"""Secrets and local users: embedded agents' tokens, /healthz, the database's modes (issue 10.13, 10.14)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from hbd.api.server import LOCAL_EXECUTOR, DaemonOptions, serve_daemon
from hbd.store.files import DB_DIR_MODE, DB_FILE_MODE, private_dir
from hbd.store.log import open_store
from tests.e2e.conftest import sweep_yaml
from tests.test_service import STOP_SECONDS, clean_env, start, wait_for

TOKEN = "daemon-token-" + "0123456789abcdef" * 2


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


# ---------------------------------------------------------------- embedded agents


@pytest.mark.anyio
@pytest.mark.parametrize("daemon_token", [None, TOKEN], ids=["no-daemon-token", "daemon-token"])
async def test_an_embedded_agent_refuses_callers_without_its_own_fresh_token(
    tmp_path: Path, daemon_token: str | None
) -> None:
    async with anyio.create_task_group() as tg:
        opts = DaemonOptions(db=tmp_path / "hbd.db", port=0, local_slots=1, token=daemon_token)
        running = await tg.start(serve_daemon, opts)
        client = running.daemon.pool.executors[LOCAL_EXECUTOR].client
        auth = client._http.headers.get("authorization", "")  # what the daemon sends it
        agent_token = auth.removeprefix("Bearer ")
        assert auth.startswith("Bearer ") and agent_token != daemon_token
        assert len(agent_token) >= 32
        async with httpx.AsyncClient(base_url=client.url, timeout=10) as http:
            body = {"id": "x-s0-r0-c0", "sweep_id": "x", "command": ["sh", "-c", "touch pwned"]}
            for headers in ({}, {"Authorization": f"Bearer {daemon_token}"}):
                r = await http.post("/v1/trials", json=body, headers=headers)
                assert r.status_code == 401, r.text
                assert (await http.get("/v1/trials", headers=headers)).status_code == 401
        tg.cancel_scope.cancel()
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.anyio
async def test_healthz_shows_executor_urls_only_to_callers_with_the_token(tmp_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        opts = DaemonOptions(db=tmp_path / "hbd.db", port=0, local_slots=1, token=TOKEN)
        running = await tg.start(serve_daemon, opts)
        agent_url = running.daemon.pool.executors[LOCAL_EXECUTOR].client.url
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as http:
            public = await http.get("/healthz")
            private = await http.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
        tg.cancel_scope.cancel()
    assert public.status_code == private.status_code == 200
    assert agent_url not in public.text and "url" not in public.json()["executors"][0]
    assert public.json()["executors"][0]["slots"] == 1
    assert private.json()["executors"][0]["url"] == agent_url


# ---------------------------------------------------------------- the database's modes


@pytest.mark.anyio
async def test_database_wal_and_shm_are_private_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    db = tmp_path / "new" / "state" / "hbd.db"
    private_dir(db.parent)  # what hbd serve and hbd run do first
    async with await open_store(db) as store:
        await store.append(
            "sw1",
            [("sweep.submitted", {"name": "", "spec": "s", "spec_json": {}, "seed": 1})],
            at=0.0,
        )
        files = [db, db.with_name("hbd.db-wal"), db.with_name("hbd.db-shm")]
        for f in files:
            assert f.exists(), f
            assert mode(f) == DB_FILE_MODE, (f, oct(mode(f)))
    assert mode(db.parent) == DB_DIR_MODE and mode(db.parent.parent) == DB_DIR_MODE
    assert mode(tmp_path) == mode(tmp_path)  # (an existing folder is not touched)


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o750)
    private_dir(shared)
    assert mode(shared) == 0o750
    private_dir(shared / "a" / "b")
    assert mode(shared / "a") == DB_DIR_MODE and mode(shared / "a" / "b") == DB_DIR_MODE


# ---------------------------------------------------------------- the token in /proc/PID/environ


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "executor"])
def test_a_service_started_with_hbd_token_does_not_keep_it_in_its_environment_block(
    tmp_path: Path,
    notify_socket: socket.socket,
    procs: list[subprocess.Popen[bytes]],
    command: str,
) -> None:
    args = (
        ["--db", str(tmp_path / "hbd.db"), "--local-executor", "1"]
        if command == "serve"
        else ["--workdir", str(tmp_path / "w")]
    )
    env = clean_env(NOTIFY_SOCKET=notify_socket.getsockname(), HBD_TOKEN=TOKEN)
    p = start(procs, command, "--port", "0", *args, env=env, stderr=tmp_path / "err.log")
    status = wait_for(notify_socket, "READY")["STATUS"]
    # What any process of this user (a trial) can read, of the very process serving:
    block = Path(f"/proc/{p.pid}/environ").read_bytes()
    assert TOKEN.encode() not in block
    assert b"HBD_TOKEN=" not in block
    if command == "serve":
        url = status.removeprefix("serving on ")
        path = "/v1/sweeps"
    else:
        url = f"http://127.0.0.1:{int(status.split('port ')[1].split()[0])}"
        path = "/v1/trials"
    # ...and the service still has the token: it was handed over, not lost.
    assert httpx.get(f"{url}{path}", timeout=10).status_code == 401
    authorized = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert authorized.status_code == 200
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=STOP_SECONDS) == 0


@pytest.mark.slow
def test_hbd_run_serves_its_api_only_to_itself(tmp_path: Path) -> None:
    # A free port for `hbd run --port` (bound and released: the kernel does not
    # hand it out again at once).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tmp_path / "spec.yaml"
    spec.write_text(sweep_yaml(tmp_path / "trials.jsonl", sleep=1.0, max_iterations=3))
    argv = [sys.executable, "-m", "hbd", "run", str(spec), "--db", str(tmp_path / "hbd.db")]
    p = subprocess.Popen(
        [*argv, "--port", str(port)],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        answer = None
        while answer is None and p.poll() is None and time.monotonic() < deadline:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/sweeps", timeout=5)
            except httpx.TransportError:
                time.sleep(0.05)
        assert answer is not None, "hbd run never answered"
        assert answer.status_code == 401  # any local user would have seen (and run) sweeps
    finally:
        p.send_signal(signal.SIGINT)  # Ctrl-C: hbd run stops its trials, then exits
        try:
            p.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
