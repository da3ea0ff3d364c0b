"""Pushing TrialUpdates to a trial's ``callback_url``, best effort.

Each trial gets one ordered channel drained by one task in the agent's task
group: metrics lines are offered in batches without waiting (dropped, logged,
when the receiver is slow: the daemon fetches lines it missed from the metrics
route), the terminal status is queued last and retried with capped exponential
backoff and full jitter.
"""

from __future__ import annotations

import random

import anyio
import httpx
import structlog

from hbd.http import auth_headers
from hbd.protocol import TrialUpdate

log = structlog.get_logger(__name__)

# Per request: a daemon that does not answer within this is treated as down.
CALLBACK_TIMEOUT = httpx.Timeout(5.0)
# A metrics line is superseded by the next one: a few tries are enough.
METRICS_CALLBACK_ATTEMPTS = 3
# The terminal status matters more; with the backoff below this spans about a
# minute before giving up (the daemon's polling is the safety net after that).
STATUS_CALLBACK_ATTEMPTS = 8
# Full-jitter backoff (AWS architecture blog): sleep U(0, min(cap, base * 2**n)).
BACKOFF_BASE_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 15.0
# Updates buffered per trial while the receiver is slow; beyond it metrics
# lines are dropped so that memory stays bounded and the trial never waits.
MAX_PENDING_UPDATES = 256
# Metric values (one per key per line) queued per trial: a batch holds up to
# 1000 lines of up to 256 keys, so counting updates alone would let one trial
# queue hundreds of MB. About 10 MB of Python objects; beyond it batches are
# dropped and the daemon fetches them from the metrics route.
MAX_PENDING_METRIC_VALUES = 100_000
# 4xx answers other than these mean "will never accept it": do not retry.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 425, 429})


def backoff_delay(attempt: int) -> float:
    """Seconds to sleep before retry number ``attempt`` (0-based)."""
    return random.uniform(0.0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt))


async def post_update(
    client: httpx.AsyncClient, url: str, update: TrialUpdate, *, token: str | None, attempts: int
) -> bool:
    """POST ``update`` to ``url``; True once a 2xx arrives."""
    headers = auth_headers(token)
    body = update.model_dump_json().encode()
    headers["Content-Type"] = "application/json"
    for attempt in range(attempts):
        if attempt:
            await anyio.sleep(backoff_delay(attempt - 1))
        try:
            response = await client.post(
                url, content=body, headers=headers, timeout=CALLBACK_TIMEOUT
            )
        except httpx.HTTPError as exc:
            log.info("callback attempt failed", url=url, trial_id=update.trial_id, error=repr(exc))
            continue
        if response.is_success:
            return True
        log.info("callback refused", url=url, trial_id=update.trial_id, status=response.status_code)
        if (
            400 <= response.status_code < 500
            and response.status_code not in RETRYABLE_CLIENT_ERRORS
        ):
            break
    log.warning(
        "callback not delivered",
        url=url,
        trial_id=update.trial_id,
        kind=update.kind,
        seq=update.seq,
    )
    return False


class CallbackChannel:
    """The ordered updates of one trial to one URL."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self._token = token
        # The terminal status got a 2xx: the daemon has the result (retention may start).
        self.status_delivered = False
        self._send, self._receive = anyio.create_memory_object_stream[TrialUpdate](
            MAX_PENDING_UPDATES
        )
        self._pending_values = 0
        self._dropped = False  # warned about a drop already (a slow daemon would flood the log)

    def offer(self, update: TrialUpdate) -> None:
        """Queue a metrics update without waiting; drop it if the queue is full."""
        cost = _values(update)
        try:
            if self._pending_values + cost > MAX_PENDING_METRIC_VALUES:
                raise anyio.WouldBlock
            self._send.send_nowait(update)
            self._pending_values += cost
        except anyio.WouldBlock:
            if not self._dropped:
                self._dropped = True
                log.warning(
                    "callback queue full; metrics updates dropped (the daemon fetches them)",
                    trial_id=update.trial_id,
                )
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def finish(self, update: TrialUpdate) -> None:
        """Queue the terminal status (waiting for room if needed) and close."""
        try:
            await self._send.send(update)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            self._send.close()

    def close(self) -> None:
        self._send.close()

    async def run(self, client: httpx.AsyncClient) -> None:
        """Deliver queued updates in order until the channel is closed."""
        async with self._receive:
            async for update in self._receive:
                if update.kind == "metrics":
                    self._pending_values -= _values(update)
                attempts = (
                    STATUS_CALLBACK_ATTEMPTS
                    if update.kind == "status"
                    else METRICS_CALLBACK_ATTEMPTS
                )
                try:
                    delivered = await post_update(
                        client, self.url, update, token=self._token, attempts=attempts
                    )
                    if delivered and update.kind == "status":
                        self.status_delivered = True
                except Exception:  # e.g. httpx.InvalidURL: log it, keep the agent up
                    log.exception("callback failed", url=self.url, trial_id=update.trial_id)


def _values(update: TrialUpdate) -> int:
    """What a queued metrics update costs: its metric values (at least 1)."""
    return max(1, sum(len(line.metrics) for line in update.metrics_lines()))
