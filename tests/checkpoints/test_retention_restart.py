"""Retention across failures and restarts: never deleted twice, what failed is retried.

A real SQLite log and the daemon's retention task; the executor is a memory
backend (the seam's test double) whose ``delete_checkpoint`` records calls
and can answer "in use" (409, ExecutorBusy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from hbd.core.vocabulary import EventType
from hbd.daemon.app import Daemon
from hbd.daemon.backend import BACKENDS, backend_for
from hbd.daemon.clock import FakeClock
from hbd.errors import ExecutorBusy
from hbd.store.log import Store, open_store
from tests.checkpoints.conftest import lineage
from tests.daemon.helpers import wait_finished
from tests.daemon.test_backend_seam import MemoryBackend
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio

FREED = 100  # bytes each deletion reports


class Deleting(MemoryBackend):
    """Deletes checkpoints; ids ending with ``stuck`` stay in use; the first ``busy`` calls are 409."""

    stuck: ClassVar[str | None] = None
    busy: ClassVar[int] = 0

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.deleted: list[str] = []
        self.refused: list[str] = []

    async def delete_checkpoint(self, trial_id: str) -> int:
        stuck = Deleting.stuck is not None and trial_id.endswith(Deleting.stuck)
        if stuck or Deleting.busy > 0:
            Deleting.busy = max(0, Deleting.busy - 1)
            self.refused.append(trial_id)
            raise ExecutorBusy(f"checkpoint of {trial_id} in use (HTTP 409)")
        self.deleted.append(trial_id)
        return FREED


async def expected_deletions(store: Store, sweep_id: str) -> set[str]:
    """Every trial but the best's lineage (all of them ran: the sweep succeeded)."""
    sweep = await store.get_sweep(sweep_id)
    assert sweep is not None and sweep.best_trial_id is not None
    trials = [{"id": t.id, "parent": t.parent} for t in await store.list_trials(sweep_id)]
    return {t["id"] for t in trials} - lineage(trials, sweep.best_trial_id)


async def deleted_events(store: Store, sweep_id: str) -> list[str]:
    events = await store.sweep_events(sweep_id, types={EventType.CHECKPOINT_DELETED})
    return [str(e.trial_id) for e in events]


async def run_daemon(store: Store, until: Any, spec: str | None = None) -> tuple[Deleting, str]:
    """A daemon with one ``Deleting`` executor; submits ``spec`` if given; stops once ``until``."""
    async with anyio.create_task_group() as tg:
        daemon = Daemon(store, clock=FakeClock(), checkpoints_keep="resumable")
        daemon.retention.retry_delay = 0.05
        backend = backend_for("del://a", token=None)
        assert isinstance(backend, Deleting)
        daemon.add_executor("del://a", backend)
        await tg.start(daemon.run)
        sweep_id = ""
        if spec is not None:
            sweep_id, _ = await daemon.submit(spec)
            assert await wait_finished(daemon, sweep_id) == "succeeded"
        with anyio.fail_after(30):
            while not await until(daemon, backend):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    return backend, sweep_id


async def test_each_checkpoint_is_deleted_once_and_what_failed_is_retried_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BACKENDS, "del", f"{__name__}:Deleting")
    monkeypatch.setattr(Deleting, "busy", 3)  # in use at first: retried within the run
    monkeypatch.setattr(Deleting, "stuck", "-r0-c1")  # in use for the whole first run
    spec = sweep_yaml(tmp_path / "u.jsonl", concurrency=None, resume=True)
    store = await open_store(tmp_path / "hbd.db")
    try:
        # First run: the sweep; three 409s retried; the -r0-c1 checkpoints stay in use.
        async with anyio.create_task_group() as tg:
            daemon = Daemon(store, clock=FakeClock(), checkpoints_keep="resumable")
            daemon.retention.retry_delay = 0.05
            backend = backend_for("del://a", token=None)
            assert isinstance(backend, Deleting)
            daemon.add_executor("del://a", backend)
            await tg.start(daemon.run)
            sweep_id, _ = await daemon.submit(spec)
            assert await wait_finished(daemon, sweep_id) == "succeeded"
            want = await expected_deletions(store, sweep_id)
            stuck = {t for t in want if t.endswith("-r0-c1")}
            assert stuck and stuck != want
            with anyio.fail_after(30):
                while set(backend.deleted) != want - stuck or not stuck <= set(backend.refused):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert sorted(backend.deleted) == sorted(want - stuck)  # each once
        assert len(backend.refused) >= 3 + len(stuck)
        assert sorted(await deleted_events(store, sweep_id)) == sorted(want - stuck)

        # Second run: the log says what is deleted; only the stuck ones are tried again.
        Deleting.stuck = None

        async def stuck_deleted(daemon: Daemon, backend: Deleting) -> bool:
            return set(backend.deleted) == stuck

        backend, _ = await run_daemon(store, stuck_deleted)
        assert sorted(backend.deleted) == sorted(stuck)
        assert sorted(await deleted_events(store, sweep_id)) == sorted(want)

        # Third run: nothing left to delete, nothing asked of the executor.
        async def one_pass(daemon: Daemon, backend: Deleting) -> bool:
            return daemon.retention.stats.passes >= 1 and daemon.retention.idle

        backend, _ = await run_daemon(store, one_pass)
        assert backend.deleted == [] and backend.refused == []
        summary = await store.checkpoint_summary(sweep_id)
        assert summary == {"deleted": len(want), "freed_bytes": len(want) * FREED}
    finally:
        await store.close()


class Hanging(MemoryBackend):
    """An executor whose checkpoint deletion never returns."""

    calls: ClassVar[int] = 0

    async def delete_checkpoint(self, trial_id: str) -> int:
        Hanging.calls += 1
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_deletion_that_hangs_never_holds_up_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BACKENDS, "hang", f"{__name__}:Hanging")
    monkeypatch.setattr(Hanging, "calls", 0)
    store = await open_store(tmp_path / "hbd.db")
    try:
        async with anyio.create_task_group() as tg:
            daemon = Daemon(store, clock=FakeClock(), checkpoints_keep="resumable")
            daemon.add_executor("hang://a", backend_for("hang://a", token=None))
            await tg.start(daemon.run)
            spec = sweep_yaml(tmp_path / "u.jsonl", concurrency=None, resume=True)
            sweep_id, _ = await daemon.submit(spec)
            assert await wait_finished(daemon, sweep_id) == "succeeded"
            with anyio.fail_after(10):
                while Hanging.calls == 0:  # retention is stuck in its first deletion
                    await anyio.sleep(0.01)
            # ... and another sweep is dispatched and runs to its end meanwhile.
            other, _ = await daemon.submit(
                sweep_yaml(tmp_path / "u.jsonl", concurrency=None, resume=True, seed=12)
            )
            assert await wait_finished(daemon, other) == "succeeded"
            assert Hanging.calls == 1
            tg.cancel_scope.cancel()
        assert await deleted_events(store, sweep_id) == []
    finally:
        await store.close()
