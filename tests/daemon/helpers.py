"""A fake executor behind httpx.MockTransport, and a daemon wired to it, for daemon tests."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from hbd.daemon.app import Daemon
from hbd.daemon.clock import Clock
from hbd.daemon.executors import ExecutorClient
from hbd.protocol import Health, TrialStatus, TrialSubmission, TrialUpdate
from hbd.store.log import Store, open_store

EXECUTOR = "fake"
Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]
# A sweep in these tests ends in well under a second; this only catches a hang.
WAIT_TIMEOUT = 20.0


def loss(sub: TrialSubmission) -> float:
    """The e2e trial program's objective, so outcomes compare with tests.crash.harness.expected_outcome."""
    return (float(sub.params["x"]) - 0.3) ** 2 + 1.0 / int(sub.resource.value)


@dataclass
class FakeExecutor:
    """Speaks /v1. ``finish_on_submit``: a trial succeeds as it is submitted (a null executor)."""

    slots: int = 4
    finish_on_submit: bool = False
    down: bool = False  # every request fails to connect
    db: Path | None = None  # when set, every submit checks its trial.scheduled is committed
    trials: dict[str, TrialStatus] = field(default_factory=dict)
    submissions: dict[str, TrialSubmission] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)  # "processes" started per trial
    posts: Counter[str] = field(
        default_factory=Counter
    )  # submits received per trial, repeats included
    uncommitted_sends: list[str] = field(default_factory=list)

    def running(self) -> list[str]:
        return [t for t, s in self.trials.items() if s.state == "running"]

    def finish(self, trial_id: str) -> TrialStatus:
        sub = self.submissions[trial_id]
        status = self.trials[trial_id].model_copy(
            update={"state": "succeeded", "metrics": {"loss": loss(sub)}, "ended_at": 1.0}
        )
        self.trials[trial_id] = status
        return status

    def finish_update(self, trial_id: str) -> TrialUpdate:
        """Finish the trial and return the callback that reports it."""
        status = self.finish(trial_id)
        return TrialUpdate(
            kind="status",
            trial_id=trial_id,
            sweep_id=status.sweep_id,
            seq=1,
            metrics=status.metrics,
            status=status,
        )

    def _committed(self, trial_id: str) -> bool:
        assert self.db is not None
        con = sqlite3.connect(self.db)  # another connection: it sees only committed data
        try:
            row = con.execute(
                "SELECT 1 FROM events WHERE trial_id = ? AND type = 'trial.scheduled'", (trial_id,)
            ).fetchone()
        finally:
            con.close()
        return row is not None

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/v1/health":
            running = self.running()
            health = Health(
                version="fake",
                slots=self.slots,
                free_slots=max(0, self.slots - len(running)),
                running=running,
            )
            return httpx.Response(200, content=health.model_dump_json())
        if path == "/v1/trials" and request.method == "POST":
            sub = TrialSubmission.model_validate_json(request.content)
            self.posts[sub.id] += 1
            if sub.id in self.trials:
                return httpx.Response(200, content=self.trials[sub.id].model_dump_json())
            if self.db is not None and not self._committed(sub.id):
                self.uncommitted_sends.append(sub.id)
            self.submissions[sub.id] = sub
            self.starts[sub.id] += 1
            self.trials[sub.id] = TrialStatus(
                id=sub.id, sweep_id=sub.sweep_id, state="running", started_at=0.0
            )
            if self.finish_on_submit:
                self.finish(sub.id)
            return httpx.Response(201, content=self.trials[sub.id].model_dump_json())
        trial_id = path.split("/")[3]
        status = self.trials.get(trial_id)
        if status is None:
            return httpx.Response(404, json={"detail": "unknown trial"})
        if path.endswith("/cancel"):
            if not status.finished:
                status = self.trials[trial_id] = status.model_copy(update={"state": "cancelled"})
        return httpx.Response(200, content=status.model_dump_json())


@asynccontextmanager
async def running_daemon(
    db: Path,
    executor: FakeExecutor | Handler | None,
    *,
    clock: Clock | None = None,
    lost_after: float | None = None,
    store_factory: Callable[[Path], Awaitable[Store]] = open_store,
    more: Mapping[str, FakeExecutor | Handler] | None = None,
) -> AsyncIterator[Daemon]:
    """A Daemon (no HTTP server) on ``db`` whose executor is ``executor`` (named ``fake``)
    plus ``more`` by name; cancelled on exit. A handler stands for an executor too."""
    executors: dict[str, FakeExecutor | Handler] = {}
    if executor is not None:
        executors[EXECUTOR] = executor
    executors.update(more or {})
    store = await store_factory(db)
    try:
        async with anyio.create_task_group() as tg:
            kwargs: dict[str, Any] = {} if lost_after is None else {"lost_after": lost_after}
            daemon = Daemon(store, clock=clock, **kwargs)
            for name, ex in executors.items():
                handler = ex.handler if isinstance(ex, FakeExecutor) else ex
                daemon.add_executor(
                    name,
                    ExecutorClient(
                        f"http://{name}", transport=httpx.MockTransport(handler), clock=clock
                    ),
                )
            await tg.start(daemon.run)
            try:
                yield daemon
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()


async def wait_finished(daemon: Daemon, sweep_id: str, timeout: float = WAIT_TIMEOUT) -> str:
    with anyio.fail_after(timeout):
        while True:
            sweep = await daemon.store.get_sweep(sweep_id)
            if sweep is not None and sweep.finished:
                return sweep.status
            await anyio.sleep(0.01)


def event_types(db: Path, trial_id: str) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [
            r[0]
            for r in con.execute(
                "SELECT type FROM events WHERE trial_id = ? ORDER BY seq", (trial_id,)
            )
        ]
    finally:
        con.close()


def event_count(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        con.close()


async def finish_running(
    executors: list[FakeExecutor], daemon: Daemon, sweep_id: str, timeout: float = WAIT_TIMEOUT
) -> None:
    """Finish every running trial (reporting it by callback) until the sweep ends."""
    with anyio.fail_after(timeout):
        while True:
            for executor in executors:
                for trial_id in executor.running():
                    if executor.trials[trial_id].sweep_id != sweep_id:
                        continue
                    await daemon.on_update(executor.finish_update(trial_id))
            sweep = await daemon.store.get_sweep(sweep_id)
            if sweep is not None and sweep.finished:
                return
            await anyio.sleep(0.01)


def dispatched_to(db: Path) -> dict[str, str]:
    """Trial id -> the executor its (last) trial.dispatched event names."""
    import json

    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT trial_id, payload FROM events WHERE type = 'trial.dispatched' ORDER BY seq"
        ).fetchall()
    finally:
        con.close()
    return {tid: json.loads(p)["executor"] for tid, p in rows}
