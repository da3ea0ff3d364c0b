"""The web page's login and session cookie, without a browser (ASGI in process)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hbd.api.asgi import BearerAuth, Receive, Scope, Send
from hbd.web.app import (
    COOKIE_NAME,
    SESSION_SECONDS,
    WebPage,
    session_valid,
    session_value,
)

pytestmark = pytest.mark.anyio
TOKEN = "session-test-token-0123456789"


async def api(scope: Scope, receive: Receive, send: Send) -> None:
    """Stands for the daemon's routes: says which Authorization header reached it."""
    seen = dict(scope["headers"]).get(b"authorization", b"")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"api saw: " + seen})


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def client(token: str | None, clock: Clock, **kwargs: Any) -> httpx.AsyncClient:
    app = WebPage(BearerAuth(api, token), token, clock=clock)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hbd.test", **kwargs
    )


async def login(clock: Clock) -> str:
    async with client(TOKEN, clock) as http:
        r = await http.post("/login", data={"token": TOKEN})
        assert r.status_code == 303 and r.headers["location"] == "./"
        return r.cookies[COOKIE_NAME]


async def test_a_session_reads_until_it_expires() -> None:
    clock = Clock()
    cookie = await login(clock)
    async with client(TOKEN, clock, cookies={COOKIE_NAME: cookie}) as http:
        r = await http.get("/v1/sweeps")
        assert r.text == f"api saw: Bearer {TOKEN}"
        assert "ui/app.js" in (await http.get("/")).text
        clock.now += SESSION_SECONDS - 1
        assert (await http.get("/v1/sweeps")).status_code == 200
        clock.now += 2
        assert (await http.get("/v1/sweeps")).status_code == 401
        assert 'name="token"' in (await http.get("/")).text


async def test_a_session_never_changes_anything_nor_overrides_a_header() -> None:
    clock = Clock()
    cookie = await login(clock)
    async with client(TOKEN, clock, cookies={COOKIE_NAME: cookie}) as http:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert (await http.request(method, "/v1/sweeps")).status_code == 401, method
        wrong = {"Authorization": "Bearer not-the-token-at-all"}
        assert (await http.get("/v1/sweeps", headers=wrong)).status_code == 401


async def test_a_changed_token_ends_every_session() -> None:
    clock = Clock()
    cookie = await login(clock)
    async with client("another-token-0123456789", clock, cookies={COOKIE_NAME: cookie}) as http:
        assert (await http.get("/v1/sweeps")).status_code == 401


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "1800003600.",
        ".abcdef",
        "-1800003600.abc",
        "99999999999999999999.abc",
        "1800003600.\x00",
        "1800003600." + "é" * 64,
    ],
)
def test_malformed_cookies_are_refused(value: str) -> None:
    assert not session_valid(value, TOKEN, 1_800_000_000.0)


def test_a_cookie_is_tied_to_its_expiry() -> None:
    good = session_value(TOKEN, 1_800_003_600)
    assert session_valid(good, TOKEN, 1_800_000_000.0)
    mac = good.partition(".")[2]
    assert not session_valid(f"1800007200.{mac}", TOKEN, 1_800_000_000.0)  # extended by hand


async def test_login_refuses_wrong_tokens_big_bodies_and_odd_methods() -> None:
    clock = Clock()
    async with client(TOKEN, clock) as http:
        r = await http.post("/login", data={"token": TOKEN[:-1]})
        assert r.status_code == 401 and "set-cookie" not in r.headers
        assert "not accepted" in r.text
        r = await http.post("/login", content=b"token=" + b"a" * 9000)
        assert r.status_code == 413
        assert (await http.put("/")).status_code == 405
        assert (await http.get("/login")).status_code == 303
        r = await http.post("/logout")
        assert r.status_code == 303 and "Max-Age=0" in r.headers["set-cookie"]
        for name in ("app.js", "app.css", "favicon.svg"):
            r = await http.get(f"/ui/{name}")
            assert r.status_code == 200 and "content-security-policy" in r.headers


async def test_without_a_token_the_page_is_served_directly() -> None:
    async with client(None, Clock()) as http:
        assert "ui/app.js" in (await http.get("/")).text
        assert (await http.get("/v1/sweeps")).text == "api saw: "
        assert (await http.post("/login", data={"token": "x"})).status_code == 303


async def test_cookie_is_secure_over_https() -> None:
    async with client(TOKEN, Clock()) as http:
        r = await http.post("https://hbd.test/login", data={"token": TOKEN})
        cookie = r.headers["set-cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert f"Max-Age={SESSION_SECONDS}" in cookie
