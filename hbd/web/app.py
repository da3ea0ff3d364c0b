"""Serving the web page, and a session cookie that stands in for the bearer token.

The API wants ``Authorization: Bearer TOKEN``. A browser's ``EventSource``
cannot send that header, so the page authenticates once with a login form:

1. ``GET /`` without a valid session answers the login form (no data in it).
2. ``POST /login`` with the token compares it with the daemon's in constant
   time (``hbd.http.token_matches``) and, when it matches, sets the cookie
   ``hbd_session=<expiry>.<hmac>``: an HMAC-SHA256 keyed by the token of the
   expiry time. ``HttpOnly`` (scripts cannot read it), ``SameSite=Strict``
   (no other site's page can make the browser send it), ``Secure`` when served
   over https, and it expires after ``SESSION_SECONDS``. Nothing is stored on
   the server: any daemon with the same token accepts it until it expires, and
   changing the token ends every session.
3. A request carrying a valid session cookie and no ``Authorization`` header
   gets the token's header added before the bearer check, **for GET and HEAD
   only**: the page reads (sweeps, trials, the event stream) and never changes
   anything, so a stolen or forged request can at most read. Changing things
   (submit, cancel) still needs the bearer token itself.

With no token configured (a daemon on loopback), the page is served directly.
The page's own files (``/ui/*``) are the same for everybody (they ship in the
package) and are served without a session; every sweep's data comes from the
API behind the check above. Every answer of this module carries a strict
Content-Security-Policy: the page loads nothing from anywhere else.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from urllib.parse import parse_qs

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hbd.http import bearer, token_matches

log = structlog.get_logger(__name__)

COOKIE_NAME = "hbd_session"
# A browser session lasts a working day: long enough not to log in again and
# again, short enough that a copied cookie soon stops working.
SESSION_SECONDS = 12 * 3600
# The login form carries one token (MAX_TOKEN_FILE_BYTES is 4096): a bigger
# body is not a login, and is refused before it is buffered.
MAX_LOGIN_BODY_BYTES = 8192
# Methods a session cookie may authorize: reading only (see the module docstring).
SESSION_METHODS = frozenset({"GET", "HEAD"})
# The page's files, by URL name: a fixed list, so no request path ever reaches the
# file system. name -> (package file, content type)
ASSETS = {
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "app.css": ("app.css", "text/css; charset=utf-8"),
    "favicon.svg": ("favicon.svg", "image/svg+xml"),
}
PAGE = "index.html"
LOGIN_PAGE = "login.html"
# The page loads and connects only to this daemon; no inline script, no frames.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
WEB_PATHS = frozenset({"/", "/index.html", "/login", "/logout"})


def _static(name: str) -> bytes:
    return resources.files("hbd.web").joinpath("static", name).read_bytes()


def session_value(token: str, expires: int) -> str:
    mac = hmac.new(token.encode(), b"hbd-web-session:%d" % expires, hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def session_valid(value: str | None, token: str, now: float) -> bool:
    """Whether ``value`` is a session cookie this token issued and it has not expired."""
    if not value:
        return False
    expires_text, _, mac = value.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12 or int(expires_text) < now:
        return False
    expected = session_value(token, int(expires_text)).partition(".")[2]
    return hmac.compare_digest(mac.encode(), expected.encode())


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers", []) if k == name), None)


def _cookie(scope: Scope) -> str | None:
    raw = _header(scope, b"cookie")
    if raw is None:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except CookieError:
        return None
    morsel = jar.get(COOKIE_NAME)
    return None if morsel is None else morsel.value


async def _respond(
    send: Send,
    status: int,
    body: bytes = b"",
    content_type: bytes = b"text/html; charset=utf-8",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *SECURITY_HEADERS,
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` (read no further)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class WebPage:
    """ASGI middleware in front of the daemon's (bearer-protected) app: serves the
    page, its files and its login, and turns a valid session cookie into the
    bearer header for read-only requests (see the module docstring)."""

    def __init__(
        self, app: ASGIApp, token: str | None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.app = app
        self.token = token
        self.clock = clock

    def _has_session(self, scope: Scope) -> bool:
        return self.token is None or session_valid(_cookie(scope), self.token, self.clock())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope.get("method", "GET")
        if path in WEB_PATHS:
            await self._web(path, method, scope, receive, send)
            return
        if path.startswith("/ui/") and method in SESSION_METHODS:
            asset = ASSETS.get(path.removeprefix("/ui/"))
            if asset is None:
                await _respond(send, 404, b"not found", b"text/plain; charset=utf-8")
            else:
                await _respond(send, 200, _static(asset[0]), asset[1].encode())
            return
        if (
            self.token is not None
            and method in SESSION_METHODS
            and _header(scope, b"authorization") is None
            and session_valid(_cookie(scope), self.token, self.clock())
        ):
            headers = [
                *scope.get("headers", []),
                (b"authorization", bearer(self.token).encode()),
            ]
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)

    async def _web(
        self, path: str, method: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if path == "/login" and method == "POST":
            await self._login(scope, receive, send)
        elif path == "/logout" and method == "POST":
            await _respond(
                send, 303, headers=[(b"location", b"./"), self._set_cookie(scope, "", 0)]
            )
        elif method not in SESSION_METHODS:
            await _respond(send, 405, b"method not allowed", b"text/plain; charset=utf-8")
        elif path in ("/login", "/logout"):
            await _respond(send, 303, headers=[(b"location", b"./")])
        elif self._has_session(scope):
            await _respond(send, 200, _static(PAGE))
        else:
            await _respond(send, 200, _login_page(""))

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None:
            await _respond(send, 303, headers=[(b"location", b"./")])
            return
        body = await _read_body(receive, MAX_LOGIN_BODY_BYTES)
        if body is None:
            await _respond(send, 413, b"login form too large", b"text/plain; charset=utf-8")
            return
        given = parse_qs(body.decode("latin-1"), max_num_fields=4).get("token", [""])[0].strip()
        if not token_matches(bearer(given), self.token):
            client = scope.get("client")
            log.info("web login refused: wrong token", client=client[0] if client else None)
            await _respond(send, 401, _login_page("That token was not accepted."))
            return
        expires = int(self.clock()) + SESSION_SECONDS
        cookie = self._set_cookie(scope, session_value(self.token, expires), SESSION_SECONDS)
        await _respond(send, 303, headers=[(b"location", b"./"), cookie])

    def _set_cookie(self, scope: Scope, value: str, max_age: int) -> tuple[bytes, bytes]:
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        return (
            b"set-cookie",
            f"{COOKIE_NAME}={value}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}".encode(),
        )


def _login_page(message: str) -> bytes:
    # ``message`` is one of this module's constant sentences, never user input.
    html = _static(LOGIN_PAGE).decode()
    return html.replace("{{ message }}", message).encode()
