"""The daemon's HTTP API (FastAPI): sweeps, trials, executor callbacks, health.

Request bodies are bounded before they reach a route: ``server.protected_app``
wraps this app in ``asgi.BodySizeLimit`` (``max_request_bytes``, default
``asgi.MAX_REQUEST_BODY_BYTES``), so no route repeats that check.

Errors of the daemon map to statuses here: a bad spec or sweep id is 422, a
sweep id that exists with another spec or a racing submit of the same id 409,
a daemon starting or stopping (``NotReady``) and a database that failed 503.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

from hbd.api.asgi import is_authenticated
from hbd.api.docs import add_docs
from hbd.api.sse import create_event_router
from hbd.api.views import (
    best_per_resource,
    resource_type,
    sweep_detail,
    sweep_summary,
    trial_view,
)
from hbd.core.errors import SpecError
from hbd.core.limits import MAX_HYPERBAND_ITERATIONS, MAX_SQL_INT
from hbd.core.scheduler import BracketOrder
from hbd.core.spec import sweep_id_problem
from hbd.core.vocabulary import TrialStatus
from hbd.daemon.app import Daemon, SweepChanged
from hbd.daemon.extend import CannotExtend, extend
from hbd.errors import ConflictError, ExecutorError, NotFound, NotReady, StoreError
from hbd.protocol import TrialUpdate
from hbd.version import __version__

# Retry-After of a 503 while the daemon starts (resuming sweeps from the log
# takes a moment) or stops: the same 2 s an event stream is told to wait.
NOT_READY_RETRY_AFTER_SECONDS = 2
TRIAL_STATUSES = tuple(TrialStatus)


def spec_problem_response(exc: SpecError) -> JSONResponse:
    errors = [{"loc": p.loc, "msg": p.msg} for p in exc.problems]
    return JSONResponse({"detail": "invalid sweep spec", "errors": errors}, status_code=422)


async def not_ready_response(request: Request, exc: Exception) -> JSONResponse:
    """Any route, while the daemon starts or stops: 503, try again shortly."""
    return JSONResponse(
        {"detail": f"the daemon is not ready: {exc}"},
        status_code=503,
        headers={"Retry-After": str(NOT_READY_RETRY_AFTER_SECONDS)},
    )


def create_app(daemon: Daemon) -> FastAPI:
    # /docs is hbd.api.docs' offline page: FastAPI's pages load assets from a CDN.
    app = FastAPI(
        title="hbd",
        version=__version__,
        summary="Hyperband sweep daemon",
        docs_url=None,
        redoc_url=None,
    )
    add_docs(app)
    app.add_exception_handler(NotReady, not_ready_response)
    router = APIRouter()

    async def sweep_or_404(sweep_id: str) -> Any:
        sweep = await daemon.store.get_sweep(sweep_id)
        if sweep is None:
            raise HTTPException(404, f"no sweep {sweep_id}")
        return sweep

    def broken(sweep_id: str) -> str | None:
        """Why a sweep could not be resumed (its log did not replay), if it could not."""
        return daemon.broken_reasons.get(sweep_id) if sweep_id in daemon.broken_sweeps else None

    def live_state(sweep_id: str) -> str | None:
        runner = daemon.runners.get(sweep_id)
        return None if runner is None else runner.machine.state.value

    @router.post("/v1/sweeps", status_code=201)
    async def submit(request: Request, response: Response, id: str | None = None) -> Any:
        if id is not None and (problem := sweep_id_problem(id)):
            raise HTTPException(422, problem)
        body = await request.body()  # bounded by BodySizeLimit (see the module docstring)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(422, "the spec is not UTF-8 text") from None
        try:
            sweep_id, created, warnings = await daemon.submit_spec(text, sweep_id=id)
        except SpecError as exc:
            return spec_problem_response(exc)
        # ConflictError (a racing submit of the same id) is a StoreError: catch it
        # first, it is the client's race, not an outage. NotReady (any route) is
        # answered by not_ready_response.
        except SweepChanged as exc:
            raise HTTPException(409, str(exc)) from None
        except ConflictError as exc:  # a racing submit of the same id
            raise HTTPException(409, f"conflicting submit: {exc}") from None
        except StoreError as exc:
            raise HTTPException(503, f"cannot store the sweep: {exc}") from None
        if not created:
            response.status_code = 200
        answer: dict[str, Any] = {
            "id": sweep_id,
            "created": created,
            "url": f"/v1/sweeps/{sweep_id}",
            "warnings": warnings,  # keys accepted but not used on a host, and the like
        }
        if not daemon.pool.executors:  # said now, not discovered by a user waiting for nothing
            answer["warnings"] = [
                *warnings,
                "the daemon has no executor: the trials wait until one is added "
                "(hbd serve --executor URL or --local-executor N)",
            ]
        return answer

    @router.get("/v1/sweeps")
    async def list_sweeps(status: str | None = None) -> list[dict[str, Any]]:
        return [
            sweep_summary(s, live_state(s.id), broken(s.id))
            for s in await daemon.store.list_sweeps(status)
        ]

    @router.get("/v1/sweeps/{sweep_id}")
    async def get_sweep(sweep_id: str) -> dict[str, Any]:
        sweep = await sweep_or_404(sweep_id)
        runner = daemon.runners.get(sweep_id)
        best_id = sweep.best_trial_id
        if runner is not None:
            best = runner.machine.best()
            best_id = best.trial_id if best else None
            iterations = runner.machine.scheduler.iterations
            opening = runner.machine.search.opening
            order: BracketOrder = "hyperband" if opening is None else opening.order
        else:  # as its scheduler would count them: the spec's and the extensions
            asked = sweep.spec_json["matrix"].get("iterations", 1)
            iterations = await daemon.store.planned_iterations(sweep_id, asked)
            order = await daemon.store.bracket_order(sweep_id)
        best_row = await daemon.store.get_trial(best_id) if best_id else None
        succeeded = await daemon.store.list_trials(sweep_id, status=TrialStatus.SUCCEEDED)
        return sweep_detail(
            sweep,
            await daemon.store.rung_progress(sweep_id),
            await daemon.store.trial_counts(sweep_id),
            best_row,
            live_state(sweep_id),
            broken(sweep_id),
            checkpoints=await checkpoints(sweep_id),
            per_resource=best_per_resource(succeeded, sweep, order),
            iterations=iterations,
            order=order,
        )

    async def checkpoints(sweep_id: str) -> dict[str, int]:
        """What retention deleted (the log), and the bytes kept if the daemon measured them."""
        summary = await daemon.store.checkpoint_summary(sweep_id)
        kept = daemon.retention.kept_bytes.get(sweep_id)
        return summary if kept is None else {**summary, "kept_bytes": kept}

    @router.get("/v1/sweeps/{sweep_id}/trials")
    async def list_trials(
        sweep_id: str,
        status: Annotated[str | None, Query(pattern="^(" + "|".join(TRIAL_STATUSES) + ")$")] = None,
        bracket: Annotated[int | None, Query(ge=0, le=MAX_SQL_INT)] = None,
        rung: Annotated[int | None, Query(ge=0, le=MAX_SQL_INT)] = None,
    ) -> list[dict[str, Any]]:
        sweep = await sweep_or_404(sweep_id)
        rtype = resource_type(sweep)
        trials = await daemon.store.list_trials(sweep_id, status=status, bracket=bracket, rung=rung)
        return [trial_view(t, rtype) for t in trials]

    @router.post("/v1/sweeps/{sweep_id}/cancel", status_code=202)
    async def cancel(sweep_id: str) -> dict[str, Any]:
        try:
            cancelling = await daemon.cancel(sweep_id)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        return {"id": sweep_id, "cancelling": cancelling}

    @router.post("/v1/sweeps/{sweep_id}/extend", status_code=202)
    async def extend_sweep(
        sweep_id: str, iterations: Annotated[int, Query(ge=1, le=MAX_HYPERBAND_ITERATIONS)] = 1
    ) -> dict[str, Any]:
        """More Hyperband iterations (logged as sweep.extended); a finished sweep reopens."""
        try:
            total = await extend(daemon, sweep_id, iterations)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except CannotExtend as exc:
            raise HTTPException(409, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"id": sweep_id, "iterations": total}

    @router.get("/v1/trials/{trial_id}/logs")
    async def trial_logs(
        trial_id: str,
        stream: Literal["stdout", "stderr"] = "stdout",
        offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    ) -> dict[str, Any]:
        """A page of a trial's output, from the executor that ran it (``hbd logs``)."""
        trial = await daemon.store.get_trial(trial_id)
        if trial is None:
            raise HTTPException(404, f"no trial {trial_id}")
        executor = daemon.pool.executors.get(trial.executor or "")
        if executor is None:
            where = (
                f"executor {trial.executor!r} is not known to this daemon"
                if trial.executor
                else "it has not been sent to an executor"
            )
            raise HTTPException(409, f"no logs for trial {trial_id}: {where}")
        try:
            page = await executor.client.logs(trial_id, stream, offset)
        except NotFound:
            raise HTTPException(
                404, f"executor {trial.executor} no longer has trial {trial_id}"
            ) from None
        except ExecutorError as exc:
            raise HTTPException(502, f"executor {trial.executor}: {exc}") from None
        return {"trial_id": trial_id, "executor": trial.executor, "stream": stream, **page}

    @router.post("/v1/callbacks", status_code=204)
    async def callback(update: TrialUpdate) -> Response:
        await daemon.on_update(update)
        return Response(status_code=204)

    @router.get("/healthz", response_model=None)
    async def healthz(request: Request) -> dict[str, Any] | JSONResponse:
        # Sweeps that could not be resumed at start (their log did not replay):
        # the daemon serves the rest, so this stays 200 but says "degraded".
        broken = sorted(daemon.broken_sweeps)
        store = daemon.store.write_health
        if not store.ok:
            # Nothing can be decided while the log cannot be written: 503, with why.
            return JSONResponse(
                {
                    "status": "failing",
                    "reason": f"the event log cannot be written: {store.last_error}",
                    "failing_since": store.failing_since,
                    "write_failures_total": store.failures_total,
                },
                status_code=503,
            )
        # Liveness probes carry no token: they get the same answer without
        # where the executors are (a remote executor's name is its URL).
        private = is_authenticated(request.scope)
        return {
            "status": "degraded" if broken else "ok",
            "version": __version__,
            "running_sweeps": len(daemon.runners),
            "broken_sweeps": broken,
            "queued_trials": daemon.dispatcher.queued(),
            "executors": [
                {
                    **({"name": e.name, "url": e.client.url} if private else {}),
                    "healthy": e.healthy,
                    "slots": e.slots,
                    "free": e.free,
                }
                for e in daemon.pool.executors.values()
            ],
        }

    router.include_router(create_event_router(daemon))  # SSE: /v1/events, /v1/sweeps/{id}/events
    app.include_router(router)
    return app
