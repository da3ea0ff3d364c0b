"""Results delivered one to three times, shuffled and late are stored exactly once."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import httpx
import pytest

from hbd.api.routes import create_app
from hbd.protocol import TrialUpdate
from tests.crash.harness import expected_outcome, outcome
from tests.daemon.helpers import FakeExecutor, running_daemon, wait_finished
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_repeated_shuffled_late_results_are_stored_once(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    db = tmp_path / "hbd.db"
    executor = FakeExecutor(slots=8)
    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=None)
    delivered: list[TrialUpdate] = []  # everything sent so far, for late repeats
    async with running_daemon(db, executor) as daemon:
        sweep_id, _ = await daemon.submit(text, sweep_id="dup")
        api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(daemon)), base_url="http://hbd"
        )
        async with api:
            with anyio.fail_after(20):
                while (await daemon.store.get_sweep(sweep_id)).status == "running":  # type: ignore[union-attr]
                    await anyio.sleep(0.01)
                    fresh = [t for t in executor.running()]
                    batch: list[TrialUpdate] = []
                    for trial_id in fresh:
                        batch += [executor.finish_update(trial_id)] * rng.randint(1, 3)
                        # a metrics line that arrives after the trial's result
                        batch.append(
                            TrialUpdate(
                                kind="metrics",
                                trial_id=trial_id,
                                sweep_id=sweep_id,
                                seq=2,
                                metrics={"loss": 99.0},
                            )
                        )
                    batch += rng.sample(delivered, min(len(delivered), 3))  # late repeats
                    rng.shuffle(batch)
                    for update in batch:
                        if rng.random() < 0.5:  # the real callback route, end to end
                            r = await api.post(
                                "/v1/callbacks",
                                content=update.model_dump_json(),
                                headers={"Content-Type": "application/json"},
                            )
                            assert r.status_code == 204
                        else:
                            await daemon.on_update(update)
                    delivered += batch
            assert await wait_finished(daemon, sweep_id) == "succeeded"
        # after the sweep finished: more repeats change nothing
        for update in rng.sample(delivered, 5):
            assert await daemon.on_update(update) is False
    assert set(executor.starts.values()) == {1}
    result = outcome(db, sweep_id)  # one result and one scheduling per trial, gap-free seqs
    result.same_as(expected_outcome(text, sweep_id))
    trials = await _metrics(db)
    assert all(m.get("loss") != 99.0 for m in trials), (
        "a metric after the result moved a finished trial"
    )


async def _metrics(db: Path) -> list[dict[str, float]]:
    import json
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return [json.loads(r[0]) for r in con.execute("SELECT metrics FROM trials")]
    finally:
        con.close()
