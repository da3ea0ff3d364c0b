"""The executor agent's HTTP face: the ``/v1`` protocol routes over an ``Agent``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import httpx
from anyio.abc import TaskStatus
from fastapi import APIRouter, FastAPI, HTTPException, Query, Response
from fastapi import Path as PathParam

from hbd.api.asgi import (
    MAX_REQUEST_BODY_BYTES,
    BearerAuth,
    BodySizeLimit,
    require_token_beyond_loopback,
    serve_app,
)
from hbd.checkpoints import UnsafeCheckpointPath
from hbd.executor import results
from hbd.executor.agent import (
    Agent,
    AgentLimits,
    AgentNotRunning,
    InvalidSubmission,
    NoFreeSlot,
    StartFailed,
    TrialConflict,
    TrialRunning,
)
from hbd.executor.logpages import LogUnavailable, read_log_page
from hbd.executor.metrics import DEFAULT_MAX_METRICS_FILE_BYTES
from hbd.executor.process import TemplateError
from hbd.lock import workdir_lock
from hbd.protocol import (
    MAX_METRICS_PAGE_LINES,
    MAX_METRICS_SEQ,
    MAX_TRIAL_ID_LENGTH,
    TRIAL_ID_PATTERN,
    CheckpointDeleted,
    Health,
    MetricsPage,
    TrialStatus,
    TrialSubmission,
)
from hbd.version import __version__

# Suggested wait after 429: about how often slots free up on a busy executor.
RETRY_AFTER_SECONDS = 5
# Routes anyone may call: health says nothing secret.
PUBLIC_PATHS = frozenset({"/v1/health"})


def create_agent_app(agent: Agent) -> FastAPI:
    """The executor's ``/v1`` routes over ``agent`` (see ``hbd.protocol``)."""
    app = FastAPI(
        title="hbd executor",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/v1/openapi.json",
    )
    app.add_middleware(BodySizeLimit, limit=MAX_REQUEST_BODY_BYTES)
    # Added last, so outermost: the token is checked before a body is even read.
    app.add_middleware(BearerAuth, token=agent.token, exempt=PUBLIC_PATHS)
    trials = APIRouter(prefix="/v1/trials")

    @trials.post("", status_code=201)
    async def submit_trial(submission: TrialSubmission, response: Response) -> TrialStatus:
        try:
            status, created = await agent.submit(submission)
        except TrialConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        except TemplateError as exc:
            detail = [{"loc": ["body", "command"], "msg": str(exc), "type": "value_error"}]
            raise HTTPException(422, detail) from exc
        except InvalidSubmission as exc:
            detail = [{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}]
            raise HTTPException(422, detail) from exc
        except StartFailed as exc:
            raise HTTPException(
                503, str(exc), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            ) from exc
        except NoFreeSlot as exc:
            raise HTTPException(
                429, str(exc), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            ) from exc
        except AgentNotRunning as exc:
            raise HTTPException(503, str(exc)) from exc
        if not created:
            response.status_code = 200
            agent.served([status])
        return status

    @trials.get("")
    async def list_trials(sweep_id: str | None = None) -> list[TrialStatus]:
        statuses = agent.list_trials(sweep_id)
        agent.served(statuses)
        return statuses

    @trials.get("/{trial_id}")
    async def get_trial(trial_id: str) -> TrialStatus:
        status = agent.get(trial_id)
        if status is None:
            raise HTTPException(404, f"unknown trial {trial_id!r}")
        agent.served([status])
        return status

    @trials.get("/{trial_id}/logs")
    async def trial_logs(
        trial_id: str,
        stream: Literal["stdout", "stderr"] = "stdout",
        offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    ) -> dict[str, Any]:
        # `hbd logs` (hbd.executor.logpages): a bounded page, untrusted files opened safely.
        if agent.get(trial_id) is None:
            raise HTTPException(404, f"unknown trial {trial_id!r}")
        try:
            return await anyio.to_thread.run_sync(
                read_log_page, agent.workdir, trial_id, stream, offset
            )
        except LogUnavailable as exc:
            raise HTTPException(409, f"log of trial {trial_id} unavailable: {exc}") from None

    @trials.get("/{trial_id}/metrics")
    async def trial_metrics(
        trial_id: str,
        after: int = Query(default=0, ge=0, le=MAX_METRICS_SEQ),
        limit: int = Query(default=MAX_METRICS_PAGE_LINES, ge=1, le=MAX_METRICS_PAGE_LINES),
    ) -> MetricsPage:
        page = await agent.metrics_after(trial_id, after, limit)
        if page is None:
            raise HTTPException(404, f"unknown trial {trial_id!r}")
        return page

    @trials.post("/{trial_id}/cancel")
    async def cancel_trial(trial_id: str) -> TrialStatus:
        try:
            status = await agent.cancel(trial_id)
        except AgentNotRunning as exc:
            raise HTTPException(503, str(exc)) from exc
        if status is None:
            raise HTTPException(404, f"unknown trial {trial_id!r}")
        agent.served([status])
        return status

    @trials.delete("/{trial_id}/checkpoint")
    async def delete_checkpoint(
        trial_id: Annotated[
            str, PathParam(max_length=MAX_TRIAL_ID_LENGTH, pattern=TRIAL_ID_PATTERN)
        ],
    ) -> CheckpointDeleted:
        if trial_id in (".", ".."):
            raise HTTPException(422, "a trial id is not '.' or '..'")
        try:
            freed = await agent.delete_checkpoint(trial_id)
        except TrialRunning as exc:
            raise HTTPException(409, str(exc)) from exc
        except UnsafeCheckpointPath as exc:
            raise HTTPException(409, f"checkpoint not deleted: {exc}") from exc
        except OSError as exc:
            raise HTTPException(503, f"checkpoint not deleted: {exc}") from exc
        return CheckpointDeleted(trial_id=trial_id, freed_bytes=freed)

    @app.get("/v1/health")
    async def health() -> Health:
        return agent.health()

    app.include_router(trials)
    return app


async def serve_agent(
    host: str,
    port: int,
    workdir: Path,
    slots: int,
    token: str | None = None,
    *,
    callback_token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    trial_cwd: Path | None = None,
    keep_trials_on_exit: bool = False,
    max_metrics_file_bytes: int = DEFAULT_MAX_METRICS_FILE_BYTES,
    limits: AgentLimits | None = None,
    gpus: Sequence[str] = (),
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run an Agent and its HTTP server until cancelled; readiness carries the bound port.

    Cancelling stops the server first (graceful, bounded), then the agent, which
    terminates running trials. Requires the asyncio backend (uvicorn).
    """
    require_token_beyond_loopback(host, token)
    agent = Agent(
        workdir,
        slots,
        token=token,
        callback_token=callback_token,
        transport=transport,
        trial_cwd=trial_cwd,
        keep_trials_on_exit=keep_trials_on_exit,
        max_metrics_file_bytes=max_metrics_file_bytes,
        limits=limits,
        gpus=gpus,
    )
    # One agent per workdir, for the agent's whole life (see hbd/lock.py).
    await anyio.to_thread.run_sync(results.make_private_dir, agent.workdir)
    with workdir_lock(agent.workdir):
        async with anyio.create_task_group() as tg:
            await tg.start(agent.run)
            port = await tg.start(serve_app, create_agent_app(agent), host, port)
            task_status.started(port)
