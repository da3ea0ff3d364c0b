"""Dispatch: a trial runs on one executor only, a busy executor is waited for, a bad
submission fails its trial (not the daemon), cancels are bounded, resume keeps affinity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import httpx
import pytest

from hbd.daemon import dispatcher as dispatcher_module
from hbd.daemon.clock import FakeClock
from hbd.daemon.executors import MAX_ATTEMPTS
from hbd.daemon.placement import MAX_DISPATCH_ATTEMPTS
from hbd.errors import ExecutorBusy, ExecutorUnavailable
from tests.daemon.helpers import (
    FakeExecutor,
    dispatched_to,
    finish_running,
    running_daemon,
    wait_finished,
)
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio


def _is_submit(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path == "/v1/trials"


def _statuses(db: Path) -> dict[str, str]:
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT id, status FROM trials").fetchall())
    finally:
        con.close()


async def test_a_submission_that_cannot_be_built_fails_its_trials_not_the_daemon(
    tmp_path: Path,
) -> None:
    executor = FakeExecutor(slots=4, finish_on_submit=True)
    text = sweep_yaml(tmp_path / "unused.jsonl", seed=1)
    async with running_daemon(tmp_path / "hbd.db", executor, clock=FakeClock()) as daemon:
        # Not in the trial-id alphabet: every TrialSubmission of it fails validation.
        bad, _ = await daemon.submit(text, sweep_id="bad id!")
        await wait_finished(daemon, bad)
        good, _ = await daemon.submit(text, sweep_id="good")
        assert await wait_finished(daemon, good) == "succeeded"  # the daemon lives on
    statuses = _statuses(tmp_path / "hbd.db")
    assert {s for t, s in statuses.items() if t.startswith("bad id!")} == {"failed"}
    assert not any(t.startswith("bad id!") for t in executor.trials)


async def test_a_submit_that_may_have_arrived_is_retried_only_on_the_same_executor(
    tmp_path: Path,
) -> None:
    big = FakeExecutor(slots=8, finish_on_submit=True)
    small = FakeExecutor(slots=2, finish_on_submit=True)

    async def lossy(request: httpx.Request) -> httpx.Response:
        response = await big.handler(request)
        if _is_submit(request):
            trial_id = httpx.Response(200, content=request.content).json()["id"]
            if big.posts[trial_id] <= MAX_ATTEMPTS:
                # The executor took it; the answer is lost on the way, every retry.
                raise httpx.ReadTimeout("injected", request=request)
        return response

    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=None)
    async with running_daemon(
        tmp_path / "hbd.db", lossy, clock=FakeClock(), more={"small": small}
    ) as daemon:
        sweep_id, _ = await daemon.submit(text, sweep_id="pin")
        assert await wait_finished(daemon, sweep_id) == "succeeded"
    assert big.trials, "the scenario needs submits that reached the big executor"
    both = set(big.trials) & set(small.trials)
    assert not both, f"trials ran on two executors: {sorted(both)}"


async def test_a_trial_sent_just_before_a_crash_is_adopted_not_sent_elsewhere(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hbd.db"
    first = FakeExecutor(slots=4)

    async def crash_after_post(request: httpx.Request) -> httpx.Response:
        response = await first.handler(request)
        if _is_submit(request):
            await anyio.sleep_forever()  # the daemon dies before trial.dispatched is committed
        return response

    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=None)
    async with running_daemon(db, crash_after_post) as daemon:
        sweep_id, _ = await daemon.submit(text, sweep_id="crash")
        with anyio.fail_after(10):
            while len(first.trials) < 4:
                await anyio.sleep(0.005)
    sent = sorted(first.trials)
    assert not set(sent) & set(dispatched_to(db)), "the scenario needs undispatched sends"
    other = FakeExecutor(slots=16)
    async with running_daemon(db, first, more={"other": other}) as daemon:
        with anyio.fail_after(10):
            while not set(sent) <= set(dispatched_to(db)):  # adopted (or, wrongly, re-sent)
                await anyio.sleep(0.005)
        await finish_running([first, other], daemon, sweep_id)
        assert await wait_finished(daemon, sweep_id) == "succeeded"
    for trial_id in sent:
        assert trial_id not in other.trials, f"{trial_id} ran on a second executor"
        assert first.posts[trial_id] == 1, f"{trial_id} was sent again instead of adopted"
        assert dispatched_to(db)[trial_id] == "fake"


async def test_a_busy_executor_is_waited_for_and_does_not_fail_trials(tmp_path: Path) -> None:
    executor = FakeExecutor(slots=4, finish_on_submit=True)
    refusals = 0

    async def busy_at_first(request: httpx.Request) -> httpx.Response:
        nonlocal refusals
        if _is_submit(request) and refusals < 3 * MAX_DISPATCH_ATTEMPTS:
            refusals += 1
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"detail": "full"})
        return await executor.handler(request)

    text = sweep_yaml(tmp_path / "unused.jsonl")
    async with running_daemon(tmp_path / "hbd.db", busy_at_first, clock=FakeClock()) as daemon:
        sweep_id, _ = await daemon.submit(text, sweep_id="busy")
        assert await wait_finished(daemon, sweep_id) == "succeeded"
        fake = daemon.placement.executors["fake"]
        assert fake.failures == 0 and fake.down_until == 0.0  # 429 is no fault
    assert refusals == 3 * MAX_DISPATCH_ATTEMPTS
    assert set(_statuses(tmp_path / "hbd.db").values()) == {"succeeded"}


async def test_429_raises_executor_busy_without_retrying(tmp_path: Path) -> None:
    from hbd.daemon.executors import ExecutorClient
    from hbd.protocol import ResourceValue, TrialSubmission

    seen = 0

    async def full(request: httpx.Request) -> httpx.Response:
        nonlocal seen
        seen += 1
        return httpx.Response(429, json={"detail": "full"})

    client = ExecutorClient("http://x", transport=httpx.MockTransport(full), clock=FakeClock())
    sub = TrialSubmission(
        id="t", sweep_id="s", command=["true"], resource=ResourceValue(name="n", value=1)
    )
    with pytest.raises(ExecutorBusy) as info:
        await client.submit(sub)
    assert seen == 1 and info.value.maybe_sent is False
    await client.aclose()


@pytest.mark.parametrize(
    ("fault", "maybe_sent"),
    [("connect", False), ("read", True), ("503", True)],
)
async def test_the_client_tells_never_sent_from_maybe_sent(fault: str, maybe_sent: bool) -> None:
    from hbd.daemon.executors import ExecutorClient

    async def failing(request: httpx.Request) -> httpx.Response:
        if fault == "connect":
            raise httpx.ConnectError("refused", request=request)
        if fault == "read":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(503)

    client = ExecutorClient("http://x", transport=httpx.MockTransport(failing), clock=FakeClock())
    with pytest.raises(ExecutorUnavailable) as info:
        await client.status("t")
    assert info.value.maybe_sent is maybe_sent
    await client.aclose()


async def test_a_health_check_does_not_end_the_cooldown_of_failing_submits(
    tmp_path: Path,
) -> None:
    async with running_daemon(tmp_path / "hbd.db", FakeExecutor()) as daemon:
        executor = daemon.placement.executors["fake"]
        executor.failures, executor.down_until = 2, daemon.clock.monotonic() + 1.0
        down_until = executor.down_until
        await daemon.reconciler.check_health()
        assert executor.healthy
        assert executor.failures == 2 and executor.down_until == down_until


async def test_cancels_in_flight_are_bounded(tmp_path: Path) -> None:
    executor = FakeExecutor(slots=8)
    gate = anyio.Event()
    in_flight = peak = 0

    async def slow_cancel(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        if request.url.path.endswith("/cancel"):
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                await gate.wait()
            finally:
                in_flight -= 1
        return await executor.handler(request)

    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=None)
    async with running_daemon(tmp_path / "hbd.db", slow_cancel) as daemon:
        sweep_id, _ = await daemon.submit(text, sweep_id="many")
        with anyio.fail_after(10):
            while len(executor.running()) < 8:
                await anyio.sleep(0.005)
        await anyio.sleep(0.05)  # dispatched notes committed
        assert await daemon.cancel(sweep_id)
        with anyio.fail_after(10):
            while peak < dispatcher_module.CANCELS_PER_EXECUTOR:
                await anyio.sleep(0.005)
        await anyio.sleep(0.1)  # more cancels would have started by now
        assert peak == dispatcher_module.CANCELS_PER_EXECUTOR
        gate.set()
        assert await wait_finished(daemon, sweep_id) == "stopped"
    assert not executor.running()


async def test_a_resumed_promotion_goes_to_its_parents_executor_after_a_restart(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hbd.db"
    first = FakeExecutor(slots=32)
    refuse_promotions = True
    refused = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal refused
        if refuse_promotions and _is_submit(request):
            if httpx.Response(200, content=request.content).json()["resume_from"]:
                refused += 1
                raise httpx.ConnectError("injected: refused", request=request)
        return await first.handler(request)

    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=None, resume=True)
    async with running_daemon(db, handler) as daemon:
        sweep_id, _ = await daemon.submit(text, sweep_id="aff")
        with anyio.fail_after(10):
            while len(first.running()) < 17:  # 9 + 5 + 3 first-rung trials (R=9)
                await anyio.sleep(0.005)
        await anyio.sleep(0.05)
        for trial_id in first.running():  # the first rungs end; promotions are scheduled
            await daemon.on_update(first.finish_update(trial_id))
        with anyio.fail_after(10):
            while not refused:  # a promotion was tried and not sent: the daemon stops here
                await anyio.sleep(0.005)
    # After the restart the parents have ended (no adoption tells where they ran) and
    # another executor has far more free slots: promotions must still go where their
    # parent ran, since its checkpoint is there.
    refuse_promotions = False
    other = FakeExecutor(slots=64)
    async with running_daemon(db, handler, more={"other": other}) as daemon:
        await finish_running([first, other], daemon, sweep_id)
        assert await wait_finished(daemon, sweep_id) == "succeeded"
    where = dispatched_to(db)
    subs = {**first.submissions, **other.submissions}
    promoted = {t: s.resume_from for t, s in subs.items() if s.resume_from is not None}
    assert promoted, "the scenario needs promoted trials"
    wrong = {t: (where[t], where[p]) for t, p in promoted.items() if where[t] != where[p]}
    assert not wrong, f"promotions not on their parent's executor: {wrong}"
