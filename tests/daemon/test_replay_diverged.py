"""A sweep whose log no longer replays to its own decisions stops loudly at start; others run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from hbd.api.routes import create_app
from tests.daemon.helpers import FakeExecutor, finish_running, running_daemon
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio


async def _leave_running(db: Path, executor: FakeExecutor, text: str, sweep_id: str) -> None:
    """Submit a sweep, let its first trials start, and stop the daemon under it."""
    async with running_daemon(db, executor) as daemon:
        await daemon.submit(text, sweep_id=sweep_id)
        with anyio.fail_after(10):
            while not any(t.startswith(sweep_id) for t in executor.running()):
                await anyio.sleep(0.005)
        await anyio.sleep(0.05)


def _alter_a_scheduled_config(db: Path, sweep_id: str) -> tuple[int, object, object]:
    """What a numpy that draws other numbers looks like: one logged config differs."""
    con = sqlite3.connect(db)
    try:
        for (name,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
        ).fetchall():
            con.execute(f'DROP TRIGGER "{name}"')  # the log is append-only; this test is the disk
        seq, payload = con.execute(
            "SELECT seq, payload FROM events WHERE sweep_id = ? AND type = 'trial.scheduled' "
            "ORDER BY seq LIMIT 1 OFFSET 2",
            (sweep_id,),
        ).fetchone()
        config = json.loads(payload)["config"]
        altered = {**config, "x": 0.5}
        con.execute(
            "UPDATE events SET payload = json_set(payload, '$.config', json(?)) WHERE seq = ?",
            (json.dumps(altered), seq),
        )
        con.commit()
    finally:
        con.close()
    return int(seq), config, altered


async def test_a_changed_logged_config_marks_the_sweep_broken_naming_seq_and_values(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hbd.db"
    executor = FakeExecutor(slots=8)
    text = sweep_yaml(tmp_path / "u.jsonl")
    await _leave_running(db, executor, text, "fine")
    await _leave_running(db, executor, text, "drift")
    seq, derived, logged = _alter_a_scheduled_config(db, "drift")
    posts = {t: n for t, n in executor.posts.items() if t.startswith("drift")}
    with capture_logs() as logs:
        async with running_daemon(db, executor) as daemon:
            assert daemon.broken_sweeps == ["drift"]
            assert "drift" not in daemon.runners and "fine" in daemon.runners
            reason = daemon.broken_reasons["drift"]
            assert reason.startswith("ReplayDiverged:") and f"at seq {seq}" in reason
            assert repr(logged) in reason and repr(derived) in reason
            api = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(daemon)), base_url="http://hbd"
            )
            async with api:
                detail = (await api.get("/v1/sweeps/drift")).json()
                listing = {s["id"]: s for s in (await api.get("/v1/sweeps")).json()}
                health = (await api.get("/healthz")).json()
            assert detail["status"] == "broken" and detail["reason"] == reason
            assert listing["drift"]["status"] == "broken" and listing["fine"]["status"] == "running"
            assert health["status"] == "degraded" and health["broken_sweeps"] == ["drift"]
            # The daemon keeps serving the other sweep to its end.
            await finish_running([executor], daemon, "fine")
    # Nothing of the broken sweep was sent again on the re-derived decisions.
    assert {t: n for t, n in executor.posts.items() if t.startswith("drift")} == posts
    errors = [e for e in logs if e.get("sweep_id") == "drift" and e["log_level"] == "error"]
    assert errors and f"seq {seq}" in errors[0]["error"]
