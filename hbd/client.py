"""An async Python client of the hbd daemon's HTTP API (what the CLI uses).

    async with Client("http://127.0.0.1:8765") as hbd:
        sweep_id = await hbd.submit(open("sweep.yaml").read())
        detail = await hbd.wait(sweep_id)

Errors are ``ClientError`` with a one-line message fit for a terminal and the
HTTP ``status`` (None when no answer came: unreachable, timed out, stream
lost); a refused spec is ``SpecRejected`` carrying every problem the daemon
found. This module is the client library's own boundary with httpx, so it
catches httpx's exceptions here and re-raises them as ``ClientError``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable, Collection
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, NoReturn

import anyio
import httpx

from hbd.core.vocabulary import FINAL_SWEEP_STATUSES, EventType
from hbd.http import auth_headers, base_url

DEFAULT_URL = "http://127.0.0.1:8765"
# The daemon answers API calls from its database in milliseconds; a call that
# takes longer than this means the daemon is stuck or the URL is wrong.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# How often wait() asks for a sweep's status.
WAIT_POLL_SECONDS = 0.5
# An event stream is silent between events, but the daemon sends a heartbeat
# every 15 s: four missed heartbeats mean the connection is dead; reconnect.
STREAM_TIMEOUT = httpx.Timeout(5.0, read=60.0)
# Wait before reconnecting an event stream, until the daemon's `retry:` says
# otherwise; and never longer than the cap (the daemon's value is advice).
RECONNECT_DELAY_SECONDS = 1.0
RECONNECT_DELAY_CAP_SECONDS = 10.0
# Reconnects in a row that bring no event before events() gives up: with the
# delays above, about a minute of a daemon that is down or refusing.
MAX_FAILED_RECONNECTS = 8
SWEEP_FINISHED = EventType.SWEEP_FINISHED


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name a daemon, with the fix; None when it can.

    httpx reads ``127.0.0.1:8765`` as scheme ``127.0.0.1``, so a missing scheme
    would otherwise fail later with a baffling "unsupported protocol".
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"{url!r} is not a URL ({exc})"
    if parts.scheme in ("http", "https") and parts.hostname:
        return None
    if "://" not in url:
        return f"{url!r} has no scheme; use http://{url}"
    return f"{url!r} is not an http(s) URL; use e.g. {DEFAULT_URL}"


def error_detail(detail: Any) -> str:
    """One line from an error body's ``detail``: a string, or FastAPI's list of
    validation errors (``[{"loc": [...], "msg": ...}]``) as ``field: message; ...``."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = [str(x) for x in item.get("loc", ()) if x not in ("query", "body", "path")]
                msg = str(item.get("msg", "invalid"))
                parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts) or "invalid request"
    return " ".join(str(detail).split())  # one line, whatever the daemon sent


class ClientError(Exception):
    """A request failed; the message says why in one line.

    ``status`` is the daemon's HTTP status, or None when no answer came (the
    daemon is unreachable or too slow, or an event stream was lost): 4xx is
    the caller's mistake, None and 5xx are failures of the daemon or the way to it.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class SpecRejected(ClientError):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        lines = "\n".join(
            f"  - {e['loc']}: {e['msg']}" if e.get("loc") else f"  - {e['msg']}" for e in errors
        )
        super().__init__(
            f"the daemon refused the spec ({len(errors)} error(s)):\n{lines}", status=422
        )


# Final sweep statuses (FINISHED_SWEEP_STATUSES also keeps the never-written
# "cancelled" of old schemas; a cancelled sweep ends "stopped").
FINISHED = FINAL_SWEEP_STATUSES


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the daemon's log, as its stream delivers it (see docs/events.md)."""

    seq: int
    type: str
    sweep_id: str
    trial_id: str | None
    at: float
    payload: dict[str, Any]


class SSEDecoder:
    """Server-Sent Events lines in, complete events out (the WHATWG parsing rules,
    minus what the daemon never sends)."""

    def __init__(self) -> None:
        self.retry_ms: int | None = None
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str | None, str, str] | None:
        """One line (without its newline); ``(id, event, data)`` when a blank line ends one."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            out = (self._id, self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return out
        if line.startswith(":"):
            return None  # a comment: heartbeat or a note from the daemon
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


def _event(frame: tuple[str | None, str, str]) -> Event:
    data = json.loads(frame[2])
    return Event(
        seq=int(data["seq"]),
        type=str(data["type"]),
        sweep_id=str(data["sweep_id"]),
        trial_id=data.get("trial_id"),
        at=float(data["at"]),
        payload=dict(data.get("payload") or {}),
    )


class EventStream:
    """One subscription's reconnect policy, sans I/O: both clients' ``events()`` drive it.

    The caller opens ``GET path?params`` with ``headers()``, hands over the
    answer's status (``answer``), each line of its body (``feed``) and any
    transport error (``broken``), and when the attempt is over asks ``retry()``
    how long to wait before the next one (``on_retry`` hears of each failed
    attempt). ``Last-Event-ID`` carries the last
    event seen, so each event arrives once, in order.
    """

    def __init__(
        self,
        url: str,
        sweep: str | None,
        *,
        after: int | None,
        types: Collection[str] | None,
        follow: bool,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.on_retry = on_retry
        self.sweep = sweep
        self.follow = follow
        self.path = f"/v1/sweeps/{sweep}/events" if sweep else "/v1/events"
        self.params: list[tuple[str, str | int | float | bool | None]] = [
            ("type", t) for t in types or ()
        ]
        if not follow:
            self.params.append(("follow", "false"))
        self.last = after
        self.delay = RECONNECT_DELAY_SECONDS
        self.failures = 0
        self.problem = ""
        self._got_any = False
        self._decoder = SSEDecoder()

    def headers(self) -> dict[str, str]:
        """Start an attempt: the request's headers."""
        self._got_any = False
        self.problem = "the stream ended"
        self._decoder = SSEDecoder()
        return {"Last-Event-ID": str(self.last)} if self.last is not None else {}

    def answer(self, status: int) -> Literal["read", "done", "refused", "retry"]:
        """What to do with a response of ``status``: read its body, stop (204: the
        sweep has ended and its end was seen), raise for it, or try again later."""
        if status == 204:
            return "done"
        if status < 400:
            return "read"
        self.problem = f"HTTP {status}"
        return "refused" if status < 500 and status != 429 else "retry"

    def feed(self, line: str) -> Event | None:
        """One body line; the event it completes, if any."""
        frame = self._decoder.feed(line)
        if self._decoder.retry_ms is not None:
            self.delay = min(RECONNECT_DELAY_CAP_SECONDS, self._decoder.retry_ms / 1000)
        if frame is None or frame[1] == "message":
            return None
        event = _event(frame)
        self.last, self._got_any, self.failures = event.seq, True, 0
        return event

    def ends_with(self, event: Event) -> bool:
        """Whether ``event`` is the last of this stream (a sweep's ``sweep.finished``)."""
        return self.sweep is not None and event.type == SWEEP_FINISHED

    def broken(self, exc: Exception) -> None:
        """The connection failed (refused, reset, timed out)."""
        self.problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def retry(self) -> float:
        """Seconds to wait before the next attempt (0 after one that brought events:
        progress bounds the loop); raises ClientError after too many empty ones."""
        if self._got_any:
            return 0.0
        self.failures += 1
        if self.on_retry is not None:
            self.on_retry(f"{self.problem} (attempt {self.failures} of {MAX_FAILED_RECONNECTS})")
        if self.failures >= MAX_FAILED_RECONNECTS:
            raise ClientError(
                f"lost the event stream of {self.url} ({self.problem}); "
                f"gave up after {self.failures} tries"
            )
        return self.delay * min(1 << (self.failures - 1), 8)


class Client:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url(url)
        if problem := url_problem(self.url):
            raise ClientError(problem)
        self._token_sent = bool(token)
        headers = auth_headers(token)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=DEFAULT_TIMEOUT, transport=transport
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ClientError(
                f"cannot reach the hbd daemon at {self.url} (is `hbd serve` running?)"
            ) from None
        except httpx.TimeoutException:
            raise ClientError(f"the hbd daemon at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ClientError(f"request to {self.url} failed: {exc}") from None
        if response.status_code == 422 and "errors" in _json(response):
            raise SpecRejected(_json(response)["errors"])
        if response.status_code >= 400:
            self._raise_for(response)
        return response.json() if response.content else None

    async def submit(self, spec_text: str, *, sweep_id: str | None = None) -> str:
        return str((await self.submit_answer(spec_text, sweep_id=sweep_id))["id"])

    async def submit_answer(self, spec_text: str, *, sweep_id: str | None = None) -> dict[str, Any]:
        """The daemon's whole answer to a submit: ``id``, ``created`` and any
        ``warnings`` (e.g. that it has no executor to run the trials on)."""
        params = {"id": sweep_id} if sweep_id else None
        body = await self._call("POST", "/v1/sweeps", content=spec_text.encode(), params=params)
        return dict(body)

    async def sweeps(self, status: str | None = None) -> list[dict[str, Any]]:
        return await self._call("GET", "/v1/sweeps", params={"status": status} if status else None)  # type: ignore[no-any-return]

    async def sweep(self, sweep_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/sweeps/{sweep_id}")  # type: ignore[no-any-return]

    async def trials(self, sweep_id: str, **filters: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        return await self._call("GET", f"/v1/sweeps/{sweep_id}/trials", params=params)  # type: ignore[no-any-return]

    async def trial(self, trial_id: str) -> dict[str, Any]:
        """One trial; found through its sweep (the id names it: ``SWEEP-sB-rR-cI``)."""
        import re

        match = re.fullmatch(r"(.+)-s\d+-r\d+-c\d+(?:-a\d+)?", trial_id)
        if match is None:
            raise ClientError(f"{trial_id!r} is not a trial id (SWEEP-sB-rR-cI)", status=400)
        sweep_id = match.group(1)
        for t in await self.trials(sweep_id):
            if t["id"] == trial_id:
                return t
        raise ClientError(f"no trial {trial_id} (HTTP 404)", status=404)

    async def logs(
        self, trial_id: str, *, stream: str = "stdout", offset: int = 0
    ) -> dict[str, Any]:
        """A page of a trial's stdout or stderr from its executor: ``data`` from
        ``offset`` to ``next_offset``, and the file's ``size``."""
        params = {"stream": stream, "offset": offset}
        return await self._call("GET", f"/v1/trials/{trial_id}/logs", params=params)  # type: ignore[no-any-return]

    async def extend(self, sweep_id: str, iterations: int) -> int:
        """Ask for more Hyperband iterations; the sweep's iterations in all."""
        answer = await self._call(
            "POST", f"/v1/sweeps/{sweep_id}/extend", params={"iterations": iterations}
        )
        return int(answer["iterations"])

    async def cancel(self, sweep_id: str) -> bool:
        return bool((await self._call("POST", f"/v1/sweeps/{sweep_id}/cancel"))["cancelling"])

    async def health(self) -> dict[str, Any]:
        return await self._call("GET", "/healthz")  # type: ignore[no-any-return]

    async def events(
        self,
        sweep: str | None = None,
        *,
        after: int | None = None,
        types: Collection[str] | None = None,
        follow: bool = True,
        on_retry: Callable[[str], None] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Every event after ``after`` (all sweeps, or ``sweep``'s), then the live tail.

        Reconnects by itself with ``Last-Event-ID`` when the connection drops, so
        each event arrives once, in order. A sweep's stream ends after its
        ``sweep.finished`` event; ``follow=False`` ends at the current end of the
        log. Use it under ``contextlib.aclosing`` when breaking out early.
        Raises ClientError for a refused request (unknown sweep or type) or after
        ``MAX_FAILED_RECONNECTS`` attempts in a row that brought nothing.
        ``on_retry(problem)`` hears of each failed attempt (``hbd watch`` shows it).
        """
        stream = EventStream(
            self.url, sweep, after=after, types=types, follow=follow, on_retry=on_retry
        )
        while True:
            headers = stream.headers()
            try:
                async with self._http.stream(
                    "GET",
                    stream.path,
                    params=stream.params,
                    headers=headers,
                    timeout=STREAM_TIMEOUT,
                ) as response:
                    todo = stream.answer(response.status_code)
                    if todo == "done":
                        return
                    if todo == "read":
                        async for line in response.aiter_lines():
                            if (event := stream.feed(line)) is not None:
                                yield event
                                if stream.ends_with(event):
                                    return
                        if not follow:
                            return
                    else:
                        await response.aread()
                        if todo == "refused":
                            self._raise_for(response)
            except httpx.TransportError as exc:  # refused, reset, timed out: reconnect
                stream.broken(exc)
            await anyio.sleep(stream.retry())

    def _raise_for(self, response: httpx.Response) -> NoReturn:
        status = response.status_code
        if status == 401:
            if self._token_sent:
                raise ClientError(
                    f"token rejected by the daemon at {self.url}: use the token file it was "
                    "started with (--token-file or HBD_TOKEN)",
                    status=status,
                )
            raise ClientError(
                f"the daemon at {self.url} wants a token: set HBD_TOKEN or pass --token-file",
                status=status,
            )
        detail = error_detail(_json(response).get("detail", response.text[:200]))
        raise ClientError(f"{detail} (HTTP {status})", status=status)

    async def wait(
        self, sweep_id: str, *, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Poll until the sweep has finished; returns its final detail."""
        while True:
            detail = await self.sweep(sweep_id)
            if on_progress is not None:
                on_progress(detail)
            if detail["status"] in FINISHED:
                return detail
            await anyio.sleep(WAIT_POLL_SECONDS)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
