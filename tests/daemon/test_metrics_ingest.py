"""Metrics lines into the log: bounded keys, every line once and in order, gaps fetched."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from hbd.daemon.app import Daemon
from hbd.daemon.clock import FakeClock
from hbd.daemon.executors import MAX_ATTEMPTS
from hbd.daemon.metricsync import MAX_VERDICT_HOLDS, MetricsLedger, MetricsLines
from hbd.errors import ConflictError
from hbd.protocol import (
    MAX_METRIC_KEYS,
    MetricsLine,
    MetricsPage,
    TrialStatus,
    TrialUpdate,
)
from tests.daemon.helpers import WAIT_TIMEOUT, FakeExecutor, event_types, running_daemon
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio


def _metrics_events(db: Path, trial_id: str) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    try:
        return [
            json.loads(r[0])
            for r in con.execute(
                "SELECT payload FROM events WHERE trial_id = ? AND type = 'trial.metrics'"
                " ORDER BY seq",
                (trial_id,),
            )
        ]
    finally:
        con.close()


def _row_metrics(db: Path, trial_id: str) -> tuple[dict[str, Any], int]:
    con = sqlite3.connect(db)
    try:
        text = con.execute("SELECT metrics FROM trials WHERE id = ?", (trial_id,)).fetchone()[0]
    finally:
        con.close()
    return json.loads(text), len(text)


async def _running_trial(daemon: Daemon, executor: FakeExecutor, tmp_path: Path) -> str:
    await daemon.submit(sweep_yaml(tmp_path / "t.jsonl", concurrency=1), sweep_id="s")
    with anyio.fail_after(WAIT_TIMEOUT):
        while not executor.running():
            await anyio.sleep(0.01)
    return executor.running()[0]


async def _wait_lines(db: Path, trial_id: str, n: int) -> list[dict[str, Any]]:
    with anyio.fail_after(WAIT_TIMEOUT):
        while len(events := _metrics_events(db, trial_id)) < n:
            await anyio.sleep(0.02)
    return events


def _update(trial_id: str, lines: list[MetricsLine]) -> TrialUpdate:
    return TrialUpdate(
        kind="metrics", trial_id=trial_id, sweep_id="s", seq=lines[-1].seq, lines=lines
    )


@pytest.mark.slow
async def test_3000_keys_on_300_lines_keep_256_keys_per_trial(tmp_path: Path) -> None:
    """Issue 10.2: the daemon took 3.5 GB merging 3000 keys x 300 lines into one row."""
    db = tmp_path / "hbd.db"
    executor = FakeExecutor()
    async with running_daemon(db, executor) as daemon:
        trial = await _running_trial(daemon, executor, tmp_path)
        # An executor that does not bound keys (a foreign one): each line holds
        # 3000 distinct keys, the sweep's metric last.
        for seq in range(1, 301):
            line = {f"k{i}": float(seq) for i in range(3000)}
            line["loss"] = 1.0 / seq
            update = TrialUpdate(
                kind="metrics", trial_id=trial, sweep_id="s", seq=seq, metrics=line
            )
            await daemon.on_update(update)
            if seq == 10:
                await _wait_lines(db, trial, 10)
                row, _ = _row_metrics(db, trial)
                assert len(row) <= MAX_METRIC_KEYS
        events = await _wait_lines(db, trial, 300)
        row, size = _row_metrics(db, trial)
    assert [e["seq"] for e in events] == list(range(1, 301))
    assert all(len(e["metrics"]) <= MAX_METRIC_KEYS for e in events)
    # First seen keys win, and the sweep's metric is always kept.
    assert set(row) == {f"k{i}" for i in range(MAX_METRIC_KEYS - 1)} | {"loss"}
    assert row["loss"] == pytest.approx(1 / 300)
    assert size < 20_000  # the row is a few KB, whatever the trial sends
    assert max(len(json.dumps(e)) for e in events) < 20_000


class LinesExecutor(FakeExecutor):
    """A fake executor that also serves its trials' metrics lines (the metrics route)."""

    lines: dict[str, list[MetricsLine]]
    fetches: list[tuple[str, int]]

    def __init__(self) -> None:
        super().__init__()
        self.lines = {}
        self.fetches = []

    def write(self, trial_id: str, n: int) -> list[MetricsLine]:
        have = self.lines.setdefault(trial_id, [])
        new = [
            MetricsLine(seq=len(have) + i + 1, metrics={"loss": 1.0 / (len(have) + i + 1)})
            for i in range(n)
        ]
        have.extend(new)
        return new

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/metrics"):
            trial_id = path.split("/")[3]
            after = int(request.url.params["after"])
            limit = int(request.url.params["limit"])
            self.fetches.append((trial_id, after))
            have = self.lines.get(trial_id, [])
            page = MetricsPage(
                trial_id=trial_id, lines=have[after : after + limit], last_seq=len(have)
            )
            return httpx.Response(200, content=page.model_dump_json())
        return await super().handler(request)


async def test_missing_lines_are_fetched_and_repeats_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hbd.daemon import runner as runner_module

    monkeypatch.setattr(runner_module, "MAX_BATCH_LINES", 200)
    db = tmp_path / "hbd.db"
    executor = LinesExecutor()
    async with running_daemon(db, executor) as daemon:
        sizes: list[int] = []
        append = daemon.store.append

        async def counting(sweep_id: str, events: Any, *, at: float) -> Any:
            sizes.append(sum(1 for t, _ in events if t == "trial.metrics"))
            return await append(sweep_id, events, at=at)

        monkeypatch.setattr(daemon.store, "append", counting)
        trial = await _running_trial(daemon, executor, tmp_path)
        first = executor.write(trial, 1500)  # none delivered: callbacks lost (daemon down)
        late = executor.write(trial, 10)
        await daemon.on_update(_update(trial, late))  # a gap before it: fetch 1..1500 first
        await daemon.on_update(_update(trial, late[:3]))  # a repeat
        await daemon.on_update(_update(trial, first[:5]))  # an old repeat
        assert len(await _wait_lines(db, trial, 1510)) == 1510
        more = executor.write(trial, 7)  # never called back
        status = executor.finish(trial).model_copy(update={"metrics_seq": more[-1].seq})
        executor.trials[trial] = status
        await daemon.on_update(
            TrialUpdate(kind="status", trial_id=trial, sweep_id="s", seq=1517, status=status)
        )
        with anyio.fail_after(WAIT_TIMEOUT):
            while (await daemon.store.get_trial(trial)).status != "succeeded":  # type: ignore[union-attr]
                await anyio.sleep(0.02)
    events = _metrics_events(db, trial)
    assert [e["seq"] for e in events] == list(range(1, 1518))
    con = sqlite3.connect(db)
    try:
        kinds = [
            r[0]
            for r in con.execute(
                "SELECT type FROM events WHERE trial_id = ? ORDER BY seq", (trial,)
            )
        ]
    finally:
        con.close()
    assert kinds.index("trial.succeeded") > max(
        i for i, k in enumerate(kinds) if k == "trial.metrics"
    )
    assert executor.fetches[0] == (trial, 0)  # paged from the first missing line
    # A catch-up is committed in bounded transactions, not all at once.
    assert max(sizes) <= 200 + 1000  # the limit, plus at most one page that crossed it


async def test_the_store_refuses_a_metrics_line_logged_twice(tmp_path: Path) -> None:
    from hbd.store.log import open_store

    async with await open_store(tmp_path / "hbd.db") as store:
        line = {"trial_id": "t", "seq": 1, "metrics": {"loss": 1.0}}
        await store.append("s", [("trial.metrics", line)], at=1.0)
        with pytest.raises(ConflictError):
            await store.append("s", [("trial.metrics", {**line, "metrics": {}})], at=2.0)
        await store.append("s", [("trial.metrics", {**line, "seq": 2})], at=3.0)
        # A second run of the trial (hbd interrupted under the first) counts from 1 again.
        await store.append("s", [("trial.metrics", {**line, "run": 2})], at=4.0)
        with pytest.raises(ConflictError):
            await store.append("s", [("trial.metrics", {**line, "run": 2})], at=5.0)
        assert await store.event_count() == 3


def test_the_ledger_logs_lines_in_order_once_and_a_new_run_from_one() -> None:
    ledger = MetricsLedger("loss")
    ledger.load({"t": (2, ["loss", "acc"], 1)})

    def lines(*seqs: int) -> tuple[MetricsLine, ...]:
        return tuple(MetricsLine(seq=s, metrics={"loss": float(s)}) for s in seqs)

    assert ledger.records(MetricsLines("t", lines(1, 2))) == []  # logged before the restart
    assert [p["seq"] for _, p in ledger.records(MetricsLines("t", lines(2, 3, 5, 6)))] == [3]
    assert ledger.last_seq("t") == 3
    second = ledger.records(MetricsLines("t", lines(1, 2), run=2))
    assert [(p["seq"], p["run"]) for _, p in second] == [(1, 2), (2, 2)]
    assert ledger.records(MetricsLines("t", lines(4))) == []  # the first run's, arriving late


def test_a_status_reports_how_many_lines_the_executor_read() -> None:
    status = TrialStatus(id="t", sweep_id="s", state="running", started_at=0.0, metrics_seq=4)
    assert TrialStatus.model_validate_json(status.model_dump_json()).metrics_seq == 4
    with pytest.raises(ValueError):
        TrialStatus(id="t", sweep_id="s", state="running", started_at=0.0, metrics_seq=2**63)


async def test_an_executor_without_the_metrics_route_only_loses_the_missing_lines(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hbd.db"
    executor = FakeExecutor()  # answers the metrics route with something that is not a page

    async def no_route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metrics"):
            return httpx.Response(404, json={"detail": "Not Found"})
        return await executor.handler(request)

    async with running_daemon(db, no_route) as daemon:
        trial = await _running_trial(daemon, executor, tmp_path)
        gap = [MetricsLine(seq=5, metrics={"loss": 5.0})]
        assert await daemon.on_update(_update(trial, gap)) is True  # lines 1-4 cannot be had
        ok = [MetricsLine(seq=s, metrics={"loss": float(s)}) for s in (1, 2)]
        assert await daemon.on_update(_update(trial, ok)) is True
        assert [e["seq"] for e in await _wait_lines(db, trial, 2)] == [1, 2]
        await daemon.on_update(executor.finish_update(trial))
        with anyio.fail_after(WAIT_TIMEOUT):
            while (await daemon.store.get_trial(trial)).status != "succeeded":  # type: ignore[union-attr]
                await anyio.sleep(0.02)


class FlakyLinesExecutor(LinesExecutor):
    """Its metrics route fails (HTTP 500) for the first ``failures`` fetches."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metrics") and self.failures > 0:
            self.failures -= 1
            return httpx.Response(500, json={"detail": "disk busy"})
        return await super().handler(request)


async def _finished_with_lines_uncalled(
    daemon: Daemon, executor: LinesExecutor, tmp_path: Path, n: int
) -> str:
    """A trial that wrote ``n`` lines (no callback came) and whose finished status arrives."""
    trial = await _running_trial(daemon, executor, tmp_path)
    executor.write(trial, n)
    status = executor.finish(trial).model_copy(update={"metrics_seq": n})
    executor.trials[trial] = status
    await daemon.on_update(
        TrialUpdate(kind="status", trial_id=trial, sweep_id="s", seq=n, status=status)
    )
    with anyio.fail_after(WAIT_TIMEOUT):
        while (await daemon.store.get_trial(trial)).status != "succeeded":  # type: ignore[union-attr]
            await anyio.sleep(0.02)
    return trial


async def test_a_verdict_waits_for_lines_a_failed_fetch_missed(tmp_path: Path) -> None:
    """Review of 9.4: a failed fetch at a trial's end lost its lines for good."""
    db = tmp_path / "hbd.db"
    # The status' fetch and the first poll's fail (each after the client's retries).
    executor = FlakyLinesExecutor(failures=2 * MAX_ATTEMPTS)
    async with running_daemon(db, executor, clock=FakeClock()) as daemon:
        trial = await _finished_with_lines_uncalled(daemon, executor, tmp_path, 30)
    assert [e["seq"] for e in _metrics_events(db, trial)] == list(range(1, 31))
    kinds = event_types(db, trial)
    assert kinds.index("trial.succeeded") > max(
        i for i, k in enumerate(kinds) if k == "trial.metrics"
    )


async def test_lines_an_executor_never_serves_hold_a_verdict_only_so_long(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hbd.db"
    executor = FlakyLinesExecutor(failures=10**9)  # the lines are gone for good
    async with running_daemon(db, executor, clock=FakeClock()) as daemon:
        trial = await _finished_with_lines_uncalled(daemon, executor, tmp_path, 30)
    assert _metrics_events(db, trial) == []
    # Asked once by the status, then once per hold; then the verdict went on.
    attempts = 10**9 - executor.failures
    assert executor.fetches == [] and attempts == (MAX_VERDICT_HOLDS + 1) * MAX_ATTEMPTS


async def test_an_adopted_run_that_succeeded_logs_its_lines_under_itself_once(
    tmp_path: Path,
) -> None:
    """Review of 9.4: run 1, interrupted but succeeded, was logged again as run 2."""
    db = tmp_path / "hbd.db"
    executor = LinesExecutor()
    async with running_daemon(db, executor) as daemon:
        trial = await _running_trial(daemon, executor, tmp_path)
        executor.write(trial, 10)
        await daemon.on_update(_update(trial, executor.lines[trial][:5]))
        await _wait_lines(db, trial, 5)
        await daemon.interrupt("hbd run interrupted")  # the trial goes on on the executor
    assert "trial.interrupted" in event_types(db, trial)
    executor.trials[trial] = executor.finish(trial).model_copy(update={"metrics_seq": 10})
    for other in executor.running():  # only this trial is adopted; the rest run again
        del executor.trials[other]
    async with running_daemon(db, executor) as daemon:
        with anyio.fail_after(WAIT_TIMEOUT):
            while (await daemon.store.get_trial(trial)).status != "succeeded":  # type: ignore[union-attr]
                await anyio.sleep(0.02)
    events = _metrics_events(db, trial)
    assert [(e["seq"], e.get("run", 1)) for e in events] == [(s, 1) for s in range(1, 11)]
    assert executor.fetches[-1] == (trial, 5)  # fetched after what run 1 logged


async def test_lines_of_an_earlier_run_are_never_logged_under_a_later_one(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hbd.db"
    executor = LinesExecutor()
    async with running_daemon(db, executor) as daemon:
        trial = await _running_trial(daemon, executor, tmp_path)
        runner = daemon.runners["s"]
        run2 = [MetricsLine(seq=s, metrics={"loss": float(s)}) for s in (1, 2)]
        update = _update(trial, run2).model_copy(update={"run": 2})
        await daemon.on_update(update)
        await _wait_lines(db, trial, 2)
        late = _update(trial, [MetricsLine(seq=3, metrics={"loss": 3.0})])  # run 1's
        await daemon.on_update(late)
        # A page of run 1 answering a status of run 2 is not logged either.
        executor.write(trial, 9)
        missing = await daemon.metricsync.deliver(runner, trial, [], upto=9, run=2)
        assert missing == 7
    events = _metrics_events(db, trial)
    assert [(e["seq"], e.get("run", 1)) for e in events] == [(1, 2), (2, 2)]


def test_a_status_update_and_page_carry_their_run() -> None:
    status = TrialStatus(id="t", sweep_id="s", state="running", started_at=0.0, run=3)
    assert TrialStatus.model_validate_json(status.model_dump_json()).run == 3
    page = MetricsPage(trial_id="t", lines=[], last_seq=0, run=3)
    assert MetricsPage.model_validate_json(page.model_dump_json()).run == 3
    assert MetricsPage(trial_id="t", lines=[], last_seq=0).run == 1  # an older executor
    with pytest.raises(ValueError, match=r"status\.run"):
        TrialUpdate(kind="status", trial_id="t", sweep_id="s", seq=0, status=status, run=2)
    with pytest.raises(ValueError):
        TrialStatus(id="t", sweep_id="s", state="running", started_at=0.0, run=0)
