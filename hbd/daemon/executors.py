"""Talking to executors over the /v1 protocol: the ``http(s)://`` backend.

``ExecutorClient`` is the only place httpx exceptions are caught; they become
``ExecutorUnavailable`` (retry later) or ``ExecutorRejected`` (the executor
answered and said no). Transient failures are retried with capped exponential
backoff and full jitter (AWS Architecture Blog, "Exponential Backoff And
Jitter"); the trial id travels as the idempotency key, so a retried submit
that had in fact arrived is the same trial, not a second one.
"""

from __future__ import annotations

import random
from typing import Any, TypeVar

import httpx
import structlog
from pydantic import ValidationError

from hbd.daemon.clock import Clock, RealClock
from hbd.errors import ExecutorBusy, ExecutorRejected, ExecutorUnavailable, NotFound
from hbd.http import auth_headers, base_url
from hbd.protocol import CheckpointDeleted, Health, MetricsPage, TrialStatus, TrialSubmission

log = structlog.get_logger(__name__)

# Loopback or LAN executors answer in milliseconds; a submit that takes longer
# than this is stuck, and the retry (same id) is safe.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
# Retries of one request before the executor is reported unavailable:
# 0.1, 0.2, 0.4, 0.8 s caps, about 1.5 s worst case with full jitter.
MAX_ATTEMPTS = 5
BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0
# Connections per executor. Each request makes httpcore check every pooled
# connection's socket (getpeername + poll), so a large pool costs more than it
# gives: an executor answers a submit in a millisecond or two, and 4 requests
# in flight carried 640 trial runs/s in bench/overhead.py (32 carried 376).
POOL_LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4)
# A health check is one attempt within this: checks repeat every few seconds,
# so retrying one only delays the verdict, and a dead executor must not hold
# up start-up or the other executors' checks.
HEALTH_TIMEOUT = httpx.Timeout(2.0, connect=1.0)

T = TypeVar("T")


def backoff(attempt: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


class ExecutorClient:
    """One executor's /v1 API. Retries transient failures; raises hbd errors only."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        rng: random.Random | None = None,
    ) -> None:
        self.url = base_url(url)
        headers = auth_headers(token)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=DEFAULT_TIMEOUT,
            limits=POOL_LIMITS,
            transport=transport,
        )
        self._clock = clock or RealClock()
        self._max_attempts = max_attempts
        # Jitter only spreads retries in time; it never reaches a sweep decision.
        self._rng = rng or random.Random()
        self.attempts = 0  # requests sent, retries included (tests bound it)
        self.calls = 0  # logical requests (each is tried at most max_attempts times)

    def describe(self) -> str:
        return f"hbd agent at {self.url}"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self, method: str, path: str, *, max_attempts: int | None = None, **kwargs: object
    ) -> httpx.Response:
        last: Exception | None = None
        maybe_sent = False  # whether any attempt may have reached the executor
        self.calls += 1
        attempts = max_attempts or self._max_attempts
        for attempt in range(attempts):
            if attempt:
                await self._clock.sleep(backoff(attempt - 1, self._rng))
            self.attempts += 1
            try:
                response = await self._http.request(method, path, **kwargs)  # type: ignore[arg-type]
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = exc  # never got past connecting: the executor saw nothing
                continue
            except httpx.TransportError as exc:
                last = exc  # sent, then timed out or dropped: it may have arrived
                maybe_sent = True
                continue
            if response.status_code == 429:
                # No free slot: a refusal, so nothing ran (a repeat of a trial it
                # has would have been answered 200). Wait for a slot; no retry storm.
                raise ExecutorBusy(f"{self.url}: HTTP 429 (no free slot)", maybe_sent=False)
            if response.status_code >= 500:
                last = ExecutorUnavailable(f"{self.url}: HTTP {response.status_code}")
                maybe_sent = True
                continue
            return response
        raise ExecutorUnavailable(
            f"{self.url} unavailable after {attempt + 1} attempt(s): {last}",
            maybe_sent=maybe_sent,
        ) from last

    @staticmethod
    def _parse(model: type[T], response: httpx.Response, what: str) -> T:
        try:
            return model.model_validate_json(response.content)  # type: ignore[attr-defined,no-any-return]
        except ValidationError as exc:
            raise ExecutorRejected(f"malformed {what} from executor: {exc.errors()[:1]}") from exc

    def _refused(self, response: httpx.Response, what: str) -> ExecutorRejected:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        return ExecutorRejected(f"{self.url} refused {what}: HTTP {response.status_code}: {detail}")

    async def submit(self, submission: TrialSubmission) -> TrialStatus:
        response = await self._request(
            "POST",
            "/v1/trials",
            content=submission.model_dump_json(),
            headers={"Content-Type": "application/json", "Idempotency-Key": submission.id},
        )
        if response.status_code not in (200, 201):
            raise self._refused(response, f"trial {submission.id}")
        return self._parse(TrialStatus, response, "trial status")

    async def status(self, trial_id: str) -> TrialStatus:
        response = await self._request("GET", f"/v1/trials/{trial_id}")
        if response.status_code == 404:
            raise NotFound(f"executor {self.url} does not know trial {trial_id}")
        if response.status_code != 200:
            raise self._refused(response, f"status of {trial_id}")
        return self._parse(TrialStatus, response, "trial status")

    async def metrics(self, trial_id: str, *, after: int, limit: int) -> MetricsPage:
        """A page of the trial's metrics lines with seq > ``after`` (NotFound if unknown)."""
        response = await self._request(
            "GET", f"/v1/trials/{trial_id}/metrics", params={"after": after, "limit": limit}
        )
        if response.status_code == 404:
            raise NotFound(f"executor {self.url} has no metrics of trial {trial_id}")
        if response.status_code != 200:
            raise self._refused(response, f"metrics of {trial_id}")
        return self._parse(MetricsPage, response, "metrics page")

    async def cancel(self, trial_id: str) -> TrialStatus | None:
        response = await self._request("POST", f"/v1/trials/{trial_id}/cancel")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refused(response, f"cancel of {trial_id}")
        return self._parse(TrialStatus, response, "trial status")

    async def logs(self, trial_id: str, stream: str, offset: int) -> dict[str, Any]:
        """A page of the trial's stdout or stderr (``hbd logs``); one attempt: a
        person is waiting and asks again."""
        response = await self._request(
            "GET",
            f"/v1/trials/{trial_id}/logs",
            params={"stream": stream, "offset": offset},
            max_attempts=1,
        )
        if response.status_code == 404:
            raise NotFound(f"executor {self.url} does not know trial {trial_id}")
        if response.status_code != 200:
            raise self._refused(response, f"logs of {trial_id}")
        try:
            page = response.json()
        except ValueError:
            raise ExecutorRejected(f"malformed log page from executor {self.url}") from None
        if not isinstance(page, dict) or not isinstance(page.get("data"), str):
            raise ExecutorRejected(f"malformed log page from executor {self.url}")
        return {
            k: page.get(k)
            for k in (
                "offset",
                "next_offset",
                "size",
                "data",
                "omitted",
                "marker_start",
                "tail_start",
            )
        }

    async def delete_checkpoint(self, trial_id: str) -> int:
        """``DELETE /v1/trials/{id}/checkpoint``: the bytes freed (0: none was left).

        409 (the checkpoint is in use: the trial or one resuming from it runs)
        raises ExecutorBusy, to be tried again later; 404 (an agent older than
        the route) raises ExecutorRejected: it cannot delete checkpoints.
        """
        response = await self._request("DELETE", f"/v1/trials/{trial_id}/checkpoint")
        if response.status_code == 409:
            raise ExecutorBusy(f"{self.url}: checkpoint of {trial_id} in use (HTTP 409)")
        if response.status_code != 200:
            raise self._refused(response, f"deleting the checkpoint of {trial_id}")
        return self._parse(CheckpointDeleted, response, "checkpoint deletion").freed_bytes

    async def health(self, *, single: bool = False) -> Health:
        """The executor's health; ``single``: one attempt within HEALTH_TIMEOUT (periodic checks)."""
        if single:
            response = await self._request(
                "GET", "/v1/health", max_attempts=1, timeout=HEALTH_TIMEOUT
            )
        else:
            response = await self._request("GET", "/v1/health")
        if response.status_code != 200:
            raise self._refused(response, "health")
        return self._parse(Health, response, "health")
