"""Serving ASGI apps inside our own task groups, and the guards every route shares.

uvicorn runs with its signal handlers off (the daemon's root task group owns
signals) on a socket we bind ourselves, so port 0 works and the real port is
known before readiness is signalled.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable, Generator

import anyio
import structlog
import uvicorn
from anyio.abc import TaskStatus
from fastapi import Header, HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hbd.http import BEARER, token_matches
from hbd.settings import is_loopback

log = structlog.get_logger(__name__)

# Request bodies are specs, submissions and callbacks: kilobytes. The limit
# keeps a bad client from making a server buffer arbitrary bodies.
MAX_REQUEST_BODY_BYTES = 1024 * 1024
# uvicorn must be listening within this, or start-up fails.
STARTUP_TIMEOUT_SECONDS = 10.0
# Open connections get this long to finish when a server stops.
GRACEFUL_SHUTDOWN_SECONDS = 5

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "token_matches"]


class BodySizeLimit:
    """ASGI middleware answering 413 to bodies above ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int = MAX_REQUEST_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._reject(send)
                return
        received = 0
        started = False
        rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit and not started:
                    # Answer now; the app sees a disconnect and anything it
                    # still sends is dropped (frameworks turn exceptions
                    # raised while reading the body into 400s).
                    rejected = True
                    await self._reject(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _reject(self, send: Send) -> None:
        body = b'{"detail":"request body larger than %d bytes"}' % self.limit
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def bearer_check(token: str | None) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency requiring ``token`` (no check when it is None)."""

    async def check(authorization: str | None = Header(default=None)) -> None:
        if token is not None and not token_matches(authorization, token):
            raise HTTPException(
                401, "missing or invalid bearer token", headers={"WWW-Authenticate": BEARER}
            )

    return check


# Scope key BearerAuth sets: whether the caller proved the token (an exempt
# route such as /healthz answers everyone but says less to strangers).
AUTHENTICATED = "hbd.authenticated"


def is_authenticated(scope: Scope) -> bool:
    """Whether BearerAuth let this request in with the token (True without a token)."""
    return bool(scope.get(AUTHENTICATED, False))


class BearerAuth:
    """ASGI middleware: every request but those to ``exempt`` paths needs the token.

    A middleware rather than a per-router dependency so that every route,
    including ones added later (SSE, /metrics, /docs), is covered by default.
    A refused request is logged without its headers: the token a client sent,
    right or wrong, never reaches a log.
    """

    def __init__(
        self, app: ASGIApp, token: str | None, *, exempt: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.token = token
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http":
            scope[AUTHENTICATED] = True  # no token: every caller may see everything
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), None)
        scope[AUTHENTICATED] = token_matches(header, self.token)
        if scope[AUTHENTICATED] or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        log.info(
            "request refused: missing or invalid bearer token",
            method=scope.get("method"),
            path=scope["path"],
            client=client[0] if client else None,
            had_header=header is not None,
        )
        body = b'{"detail":"missing or invalid bearer token"}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", BEARER.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def require_token_beyond_loopback(host: str, token: str | None) -> None:
    """Refuse, before binding, to serve beyond this machine without a token."""
    if token is None and not is_loopback(host):
        raise ValueError(f"refusing to listen on {host} without a bearer token")


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the caller's task group owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket (port 0: the kernel picks; read it from getsockname)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_app(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    sock: socket.socket | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled; readiness carries the port actually bound.

    ``sock``: an already bound socket to serve on (``host`` and ``port`` are
    then ignored); it is closed when serving ends. Binding first lets a caller
    know the port (for a callback URL) before it is ready to answer requests.

    Cancelling tells uvicorn to exit and lets it shut down in order (bounded by
    GRACEFUL_SHUTDOWN_SECONDS) instead of interrupting requests mid-flight.
    """
    if sock is None:
        sock = bind_socket(host, port)
    config = uvicorn.Config(
        app,
        lifespan="off",
        ws="none",  # plain HTTP and SSE only
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = _Server(config)
    served = anyio.Event()

    async def serve() -> None:
        try:
            with anyio.CancelScope(shield=True):
                await server.serve(sockets=[sock])
        finally:
            served.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            try:
                with anyio.fail_after(STARTUP_TIMEOUT_SECONDS):
                    while not server.started:
                        if served.is_set():
                            raise RuntimeError("HTTP server stopped during start-up")
                        await anyio.sleep(0.01)
                task_status.started(sock.getsockname()[1])
                await served.wait()
                raise RuntimeError("HTTP server stopped unexpectedly")
            finally:
                server.should_exit = True
    finally:
        sock.close()
