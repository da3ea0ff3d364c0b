"""An executor whose trials end at once: the /v1 protocol with no process behind it.

It shows how little an executor for another engine needs, and lets the
benchmarks measure hbd's own path (HTTP, SQLite, the core) alone. Each trial
"succeeds" with a loss computed from its params: on submit, or with
``--trial-seconds S`` after S seconds, reported by callback as a real
executor does.

    python bench/null_executor.py --port 9000 --slots 64 [--trial-seconds 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time

import httpx
import uvicorn
from fastapi import FastAPI, HTTPException, Response

import hbd
from hbd.protocol import Health, TrialStatus, TrialSubmission, TrialUpdate


def create_app(slots: int, trial_seconds: float = 0.0) -> FastAPI:
    app = FastAPI()
    done: dict[str, TrialStatus] = {}
    background: set[asyncio.Task[None]] = set()
    client = httpx.AsyncClient(timeout=10)

    async def finish_later(sub: TrialSubmission, status: TrialStatus) -> None:
        await asyncio.sleep(trial_seconds)
        done[sub.id] = status.model_copy(update={"ended_at": time.time()})
        if sub.callback_url:
            update = TrialUpdate(
                kind="status",
                trial_id=sub.id,
                sweep_id=sub.sweep_id,
                seq=1,
                metrics=status.metrics,
                status=done[sub.id],
            )
            await client.post(
                sub.callback_url,
                content=update.model_dump_json(),
                headers={"Content-Type": "application/json"},
            )

    @app.post("/v1/trials", status_code=201)
    async def submit(sub: TrialSubmission, response: Response) -> TrialStatus:
        if sub.id in done:
            response.status_code = 200
            return done[sub.id]
        digest = hashlib.sha256(repr(sorted(sub.params.items())).encode()).digest()
        loss = int.from_bytes(digest[:4], "big") / 2**32 + 1.0 / float(sub.resource.value)
        now = time.time()
        status = TrialStatus(
            id=sub.id,
            sweep_id=sub.sweep_id,
            state="succeeded",
            metrics={"loss": loss},
            started_at=now,
            ended_at=now,
            exit_code=0,
        )
        if trial_seconds <= 0:
            done[sub.id] = status
            return status
        done[sub.id] = status.model_copy(
            update={"state": "running", "ended_at": None, "exit_code": None}
        )
        task = asyncio.create_task(finish_later(sub, status))  # a stand-in executor: plain asyncio
        background.add(task)
        task.add_done_callback(background.discard)
        return done[sub.id]

    @app.get("/v1/trials/{trial_id}")
    async def get(trial_id: str) -> TrialStatus:
        if trial_id not in done:
            raise HTTPException(404, "unknown trial")
        return done[trial_id]

    @app.post("/v1/trials/{trial_id}/cancel")
    async def cancel(trial_id: str) -> TrialStatus:
        return await get(trial_id)

    @app.get("/v1/health")
    async def health() -> Health:
        return Health(version=hbd.__version__, slots=slots, free_slots=slots, running=[])

    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--slots", type=int, default=64)
    p.add_argument("--trial-seconds", type=float, default=0.0, help="how long each trial runs")
    a = p.parse_args()
    uvicorn.run(
        create_app(a.slots, a.trial_seconds), host="127.0.0.1", port=a.port, log_level="warning"
    )
