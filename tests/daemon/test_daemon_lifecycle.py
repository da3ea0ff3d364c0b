"""Start-up, shutdown and bookkeeping: serve only once resumed, refuse submits when not
running, survive an unreadable sweep, check executors concurrently, forget ended trials."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from hbd.api.server import DaemonOptions, callback_base, serve_daemon
from hbd.daemon import reconciler as reconciler_module
from hbd.daemon.app import Daemon, SweepChanged
from hbd.daemon.clock import FakeClock
from hbd.errors import HbdError, NotReady, StoreError
from hbd.protocol import TrialStatus, TrialUpdate
from hbd.store.log import open_store
from tests.daemon.helpers import (
    FakeExecutor,
    event_count,
    finish_running,
    running_daemon,
    wait_finished,
)
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_http_is_served_only_after_every_sweep_is_resumed(tmp_path: Path) -> None:
    db = tmp_path / "hbd.db"
    executor = FakeExecutor(slots=4)
    await _leave_running(db, executor, sweep_yaml(tmp_path / "u.jsonl"), "old")
    release = anyio.Event()

    async def slow_health(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/health":
            await release.wait()  # start-up is held here, before the resume
        return await executor.handler(request)

    port = _free_port()
    opts = DaemonOptions(
        db=db,
        port=port,
        executors=["http://fake"],
        transport=httpx.MockTransport(slow_health),
    )
    answers: list[dict[str, object]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_daemon, opts)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            with anyio.fail_after(10):
                for _ in range(20):  # while start-up is held
                    try:
                        answers.append((await http.get("/healthz")).json())
                    except httpx.ConnectError:
                        pass
                    await anyio.sleep(0.01)
                release.set()
                while True:
                    try:
                        response = await http.post("/v1/sweeps/old/cancel")
                        break
                    except httpx.ConnectError:
                        await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert not answers, f"answered before the sweeps were resumed: {answers}"
    assert response.status_code == 202 and response.json()["cancelling"] is True


async def test_cancel_of_an_unfinished_sweep_without_a_runner_is_not_already_finished(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hbd.db"
    executor = FakeExecutor(slots=4)
    await _leave_running(db, executor, sweep_yaml(tmp_path / "u.jsonl"), "idle")
    store = await open_store(db)
    try:
        daemon = Daemon(store, clock=FakeClock())  # not running: no runner for the sweep
        assert await daemon.cancel("idle") is True
    finally:
        await store.close()
    async with running_daemon(db, executor) as daemon:  # the next start acts on the stop
        assert await wait_finished(daemon, "idle") == "stopped"


async def test_submit_is_refused_before_anything_is_stored_when_not_running(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hbd.db"
    text = sweep_yaml(tmp_path / "u.jsonl")
    async with running_daemon(db, FakeExecutor()) as daemon:
        pass  # started and stopped: the schema exists
    before = event_count(db)
    with pytest.raises(NotReady):
        await daemon.submit(text, sweep_id="late")
    assert event_count(db) == before
    assert issubclass(NotReady, HbdError)


async def test_the_same_id_submitted_twice_at_once_is_created_once(tmp_path: Path) -> None:
    text = sweep_yaml(tmp_path / "u.jsonl", seed=1)
    other = sweep_yaml(tmp_path / "u.jsonl", seed=2)
    results: list[tuple[str, bool]] = []
    errors: list[Exception] = []
    async with running_daemon(tmp_path / "hbd.db", FakeExecutor(finish_on_submit=True)) as d:

        async def submit(spec: str, sweep_id: str) -> None:
            try:
                results.append(await d.submit(spec, sweep_id=sweep_id))
            except SweepChanged as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, text, "twin")
            tg.start_soon(submit, text, "twin")
        assert sorted(results) == [("twin", False), ("twin", True)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, text, "pair")
            tg.start_soon(submit, other, "pair")
        assert len(errors) == 1
    assert not issubclass(SweepChanged, StoreError)


async def test_one_unreadable_sweep_does_not_stop_start_up(tmp_path: Path) -> None:
    db = tmp_path / "hbd.db"
    executor = FakeExecutor(slots=8)
    text = sweep_yaml(tmp_path / "u.jsonl")
    await _leave_running(db, executor, text, "fine")
    await _leave_running(db, executor, text, "broken")
    con = sqlite3.connect(db)
    try:  # a log this hbd cannot replay (e.g. written by a buggy or foreign tool)
        con.execute("DROP TRIGGER IF EXISTS events_no_update")
        for (name,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
        ).fetchall():
            con.execute(f'DROP TRIGGER "{name}"')
        con.execute(
            "UPDATE events SET payload = json_set(payload, '$.spec_json', '{}') "
            "WHERE sweep_id = 'broken' AND type = 'sweep.submitted'"
        )
        con.commit()
    finally:
        con.close()
    with capture_logs() as logs:
        async with running_daemon(db, executor) as daemon:
            assert daemon.broken_sweeps == ["broken"]
            assert "fine" in daemon.runners and "broken" not in daemon.runners
            await finish_running([executor], daemon, "fine")
            assert await daemon.cancel("broken") is True  # not "already finished"
    assert any(e.get("sweep_id") == "broken" and e["log_level"] == "error" for e in logs)


def test_a_callback_cannot_carry_another_trials_status() -> None:
    status = TrialStatus(id="s-a", sweep_id="s", state="succeeded", started_at=0.0)
    TrialUpdate(kind="status", trial_id="s-a", sweep_id="s", seq=1, status=status)
    with pytest.raises(ValidationError, match="trial_id"):
        TrialUpdate(kind="status", trial_id="s-b", sweep_id="s", seq=1, status=status)
    with pytest.raises(ValidationError, match="sweep_id"):
        TrialUpdate(kind="status", trial_id="s-a", sweep_id="t", seq=1, status=status)


async def test_health_checks_run_at_once_with_one_attempt_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciler_module, "HEALTH_DEADLINE", 0.3)
    refused = 0

    async def blackhole(request: httpx.Request) -> httpx.Response:
        await anyio.sleep_forever()
        raise AssertionError

    async def dead(request: httpx.Request) -> httpx.Response:
        nonlocal refused
        refused += 1
        raise httpx.ConnectError("refused", request=request)

    with anyio.fail_after(1.5):  # readiness does not wait on dead executors one by one
        async with running_daemon(
            tmp_path / "hbd.db",
            FakeExecutor(),
            more={"hole1": blackhole, "hole2": blackhole, "hole3": blackhole, "dead": dead},
        ) as daemon:
            assert refused == 1  # one attempt, no retries
            with anyio.fail_after(0.6):  # 0.3 s for all, not 0.3 s each
                await daemon.reconciler.check_health()
            assert refused == 2
            assert daemon.pool.executors["fake"].healthy
            assert not any(daemon.pool.executors[n].healthy for n in ("hole1", "dead"))


async def test_trials_on_a_dead_executor_are_not_polled_one_by_one(tmp_path: Path) -> None:
    executor = FakeExecutor(slots=4)
    polls = 0

    async def counting(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        if executor.down and request.method == "GET" and request.url.path != "/v1/health":
            polls += 1
        return await executor.handler(request)

    text = sweep_yaml(tmp_path / "u.jsonl", concurrency=4)
    clock = FakeClock()
    async with running_daemon(tmp_path / "hbd.db", counting, clock=clock, lost_after=30) as d:
        sweep_id, _ = await d.submit(text, sweep_id="dead")
        with anyio.fail_after(10):
            while len(executor.running()) < 4:
                await anyio.sleep(0.005)
        running = executor.running()
        executor.down = True
        with anyio.fail_after(10):
            while not all(d.store and t not in d.dispatcher.inflight(sweep_id) for t in running):
                await anyio.sleep(0.005)
    # Without per-executor tracking each of 4 trials costs MAX_ATTEMPTS requests per round.
    assert polls <= 5, f"{polls} polls of trials on an executor known to be down"


async def test_a_lost_trial_is_cancelled_when_its_executor_answers_again(tmp_path: Path) -> None:
    executor = FakeExecutor(slots=2)
    text = sweep_yaml(tmp_path / "u.jsonl", concurrency=2)
    async with running_daemon(
        tmp_path / "hbd.db", executor, clock=FakeClock(), lost_after=10
    ) as daemon:
        sweep_id, _ = await daemon.submit(text, sweep_id="back")
        with anyio.fail_after(10):
            while len(executor.running()) < 2:
                await anyio.sleep(0.005)
        lost = executor.running()
        executor.down = True
        with anyio.fail_after(10):
            while any(t in daemon.dispatcher.inflight(sweep_id) for t in lost):
                await anyio.sleep(0.005)
        executor.down = False
        with anyio.fail_after(10):
            while any(executor.trials[t].state != "cancelled" for t in lost):
                await anyio.sleep(0.005)


async def test_what_is_kept_per_trial_is_forgotten_when_it_ends(tmp_path: Path) -> None:
    text = sweep_yaml(tmp_path / "u.jsonl")
    async with running_daemon(tmp_path / "hbd.db", FakeExecutor(finish_on_submit=True)) as d:
        sweep_id, _ = await d.submit(text, sweep_id="tidy")
        await wait_finished(d, sweep_id)
        await anyio.sleep(0.05)
        # All of it lives in placement: no flight, no slot, no where-it-ran.
        assert not d.placement.flights
        assert not d.placement.sweeps
        assert not any(e.running for e in d.placement.executors.values())
        assert not d.placement._ran_on  # where each trial ran: kept until its sweep ends


def test_callback_urls_for_wildcard_and_ipv6_hosts() -> None:
    with capture_logs() as logs:
        assert callback_base("0.0.0.0", 8765, None) == "http://127.0.0.1:8765"
        assert callback_base("::", 8765, None) == "http://127.0.0.1:8765"
    assert sum("advertise_url" in e["event"] for e in logs) == 2
    assert callback_base("::1", 80, None) == "http://[::1]:80"
    assert callback_base("10.0.0.5", 80, None) == "http://10.0.0.5:80"
    assert callback_base("0.0.0.0", 80, "http://hbd.lan:9/") == "http://hbd.lan:9"
