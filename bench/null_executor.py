"""An executor whose trials end at once: the /v1 protocol with no process behind it.

It shows how little an executor for another engine needs, and lets the
overhead benchmark measure hbd's own path (HTTP, SQLite, the core) alone.
Each trial "succeeds" on submit with a loss computed from its params.

    python bench/null_executor.py --port 9000 --slots 64
"""

from __future__ import annotations

import argparse
import hashlib
import time

import uvicorn
from fastapi import FastAPI, HTTPException, Response

import hbd
from hbd.api.protocol import Health, TrialStatus, TrialSubmission


def create_app(slots: int) -> FastAPI:
    app = FastAPI()
    done: dict[str, TrialStatus] = {}

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
        done[sub.id] = status
        return status

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
    a = p.parse_args()
    uvicorn.run(create_app(a.slots), host="127.0.0.1", port=a.port, log_level="warning")
