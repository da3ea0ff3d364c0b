"""The daemon's routes: sweep ids, and how the daemon's errors map to statuses.

The daemon is a stub here: these tests are about the HTTP mapping, not about
what the daemon does (tests/e2e covers that against a real one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from hbd.api.routes import NOT_READY_RETRY_AFTER_SECONDS, create_app
from hbd.core.errors import SpecError, SpecProblem
from hbd.core.spec import MAX_SWEEP_ID_LENGTH, sweep_id_problem
from hbd.core.sweep import trial_id
from hbd.daemon.app import Daemon, SweepChanged
from hbd.errors import ConflictError, NotReady, StoreWriteError
from hbd.protocol import MAX_TRIAL_ID_LENGTH, TRIAL_ID_PATTERN
from hbd.store.db import WriteHealth

pytestmark = pytest.mark.anyio


class StubDaemon:
    """Answers submit() with ``outcome``: an exception to raise or an (id, created) pair."""

    def __init__(self) -> None:
        self.outcome: BaseException | tuple[str, bool] = ("sw1", True)
        self.submitted: list[str | None] = []
        self.broken_sweeps: list[str] = []
        self.store = SimpleNamespace(write_health=WriteHealth())
        # one executor, so that submit answers carry no "no executor" warning
        self.pool = SimpleNamespace(executors={"stub": object()})

    async def submit(self, text: str, *, sweep_id: str | None = None) -> tuple[str, bool]:
        self.submitted.append(sweep_id)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    async def submit_spec(
        self, text: str, *, sweep_id: str | None = None
    ) -> tuple[str, bool, list[str]]:
        return (*await self.submit(text, sweep_id=sweep_id), [])

    async def cancel(self, sweep_id: str) -> bool:
        raise NotReady("the daemon is stopping")


@pytest.fixture
async def api() -> AsyncIterator[tuple[StubDaemon, httpx.AsyncClient]]:
    daemon = StubDaemon()
    app = create_app(cast(Daemon, daemon))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hbd") as http:
        yield daemon, http


async def submit(http: httpx.AsyncClient, sweep_id: str | None = None) -> httpx.Response:
    params = {"id": sweep_id} if sweep_id is not None else None
    return await http.post("/v1/sweeps", content=b"spec", params=params)


# ---- sweep ids ----


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ünïcode",
        "٣٤",  # Arabic-Indic digits: str.isalnum() says yes
        "a.b",
        "a/b",
        "a b",
        "x" * (MAX_SWEEP_ID_LENGTH + 1),
    ],
)
async def test_a_sweep_id_outside_the_ascii_rule_is_refused_and_nothing_is_submitted(
    api: tuple[StubDaemon, httpx.AsyncClient], bad: str
) -> None:
    daemon, http = api
    response = await submit(http, bad)
    assert response.status_code == 422
    assert "invalid sweep id" in response.json()["detail"]
    assert daemon.submitted == []


@pytest.mark.parametrize("good", ["a", "my-sweep_2", "x" * MAX_SWEEP_ID_LENGTH])
async def test_an_ascii_sweep_id_up_to_the_limit_is_accepted(
    api: tuple[StubDaemon, httpx.AsyncClient], good: str
) -> None:
    daemon, http = api
    daemon.outcome = (good, True)
    response = await submit(http, good)
    assert response.status_code == 201
    assert daemon.submitted == [good]


def test_the_longest_sweep_id_still_makes_protocol_trial_ids() -> None:
    import re

    longest = "x" * MAX_SWEEP_ID_LENGTH
    assert sweep_id_problem(longest) is None
    tid = trial_id(longest, 99, 99, 999_999)
    assert re.fullmatch(TRIAL_ID_PATTERN, tid)
    assert len(tid) <= MAX_TRIAL_ID_LENGTH


# ---- error mapping ----


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (SpecError([SpecProblem(loc="matrix.eta", msg="must be >= 2")]), 422),
        (SweepChanged("sweep a exists with a different spec; use a new id"), 409),
        (ConflictError("UNIQUE constraint failed: a second sweep.submitted"), 409),
        (NotReady("the daemon is starting"), 503),
        (StoreWriteError("disk I/O error"), 503),
    ],
)
async def test_daemon_errors_map_to_statuses(
    api: tuple[StubDaemon, httpx.AsyncClient], error: BaseException, status: int
) -> None:
    daemon, http = api
    daemon.outcome = error
    response = await submit(http, "a")
    assert response.status_code == status, response.text
    if isinstance(error, NotReady):
        assert response.headers["Retry-After"] == str(NOT_READY_RETRY_AFTER_SECONDS)


async def test_not_ready_is_503_with_retry_after_on_any_route(
    api: tuple[StubDaemon, httpx.AsyncClient],
) -> None:
    _, http = api
    response = await http.post("/v1/sweeps/a/cancel")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(NOT_READY_RETRY_AFTER_SECONDS)
    assert "stopping" in response.json()["detail"]


async def test_healthz_lists_sweeps_that_could_not_be_resumed(
    api: tuple[StubDaemon, httpx.AsyncClient],
) -> None:
    daemon, http = api
    stub: Any = daemon
    stub.runners = {}
    stub.dispatcher = type("D", (), {"queued": staticmethod(lambda: 0)})()
    stub.pool = type("P", (), {"executors": {}})()
    body = (await http.get("/healthz")).json()
    assert body["status"] == "ok"
    assert body["broken_sweeps"] == []
    daemon.broken_sweeps = ["sw2", "sw1"]
    body = (await http.get("/healthz")).json()
    assert body["status"] == "degraded"
    assert body["broken_sweeps"] == ["sw1", "sw2"]
