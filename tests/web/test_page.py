"""The web page at / in a real headless browser (Debian's chromium, via playwright).

A real daemon with a local executor runs a sweep of slow-ish trial processes;
the page must log in with the token, draw the sweep's brackets and learning
curves, and show new results as the event stream brings them, without a reload.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import hbd
from tests.live_daemon import curve_spec, curve_yaml, daemon_in_thread

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
# Never `playwright install` (it downloads a browser): the system's chromium,
# headless, with everything that would reach the network switched off.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "web-test-token-0123456789abcdef"
# Generous: chromium starts slowly on a busy 2-core machine.
UI_TIMEOUT_MS = 30_000
# Set to a path to keep the screenshot (the README's is made this way).
SCREENSHOT_ENV = "HBD_SCREENSHOT"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if executable is None:
        message = f"no chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_page_logs_in_renders_a_running_sweep_and_follows_its_stream(
    browser: Any, tmp_path: Path
) -> None:
    with daemon_in_thread(tmp_path, token=TOKEN, slots=2) as url, hbd.Client(url, token=TOKEN) as c:
        sweep = c.submit(curve_yaml(sleep=0.4, concurrency=2))
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        try:
            page.goto(url + "/")
            # No session yet: the login form, and nothing of the sweep.
            assert page.locator("input[name=token]").count() == 1
            assert sweep not in page.content()
            page.fill("input[name=token]", "not-the-token-0123456789")
            page.click("button[type=submit]")
            page.wait_for_selector("text=That token was not accepted.")
            assert errors == [
                "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
            ]
            errors.clear()
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")

            # The sweep is listed and drawn: its plan, its running trials.
            page.wait_for_selector(f"nav#sweeps a[data-sweep-id='{sweep}']")
            page.wait_for_selector("#sweep-id")
            assert page.inner_text("#sweep-id") == sweep
            assert page.locator("#brackets figure.bracket").count() == 3  # R=9, eta=3: s=2, 1, 0
            page.wait_for_selector("#brackets svg rect.tile[data-status=running]")

            # A result arrives over the stream and appears without a reload.
            page.wait_for_selector("#recent tr[data-trial-id]")
            first = set(
                page.locator("#recent tr[data-trial-id]").evaluate_all(
                    "rows => rows.map(r => r.dataset.trialId)"
                )
            )
            marker = page.evaluate("() => (window.__notReloaded = 1)")
            page.wait_for_function(
                "known => [...document.querySelectorAll('#recent tr[data-trial-id]')]"
                ".some(r => !known.includes(r.dataset.trialId))",
                arg=sorted(first),
            )
            assert page.evaluate("() => window.__notReloaded") == marker  # the same document
            page.wait_for_selector("svg#curves path.curve", state="attached")
            page.wait_for_selector("#best dd")
            # Clicking a result shows its trial (read and clicked at once: rows move).
            clicked_id = page.evaluate(
                "() => { const r = document.querySelector('#recent tr[data-trial-id]');"
                " r.click(); return r.dataset.trialId; }"
            )
            page.wait_for_selector("#selected dd")
            assert clicked_id in page.inner_text("#selected")

            # The session cookie: HttpOnly, SameSite=Strict, invisible to scripts.
            cookie = next(k for k in context.cookies() if k["name"] == "hbd_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert "hbd_session" not in page.evaluate("() => document.cookie")

            # The sweep ends; the page shows it, the cutoffs of decided rungs included.
            c.wait(sweep, timeout=90)
            page.wait_for_selector("#sweep-status.succeeded")
            page.wait_for_selector("#brackets svg line.cutoff", state="attached")
            page.wait_for_selector("#brackets svg rect.tile.promoted")
            final = c.status(sweep)
            page.wait_for_function(
                "n => document.querySelectorAll('#brackets svg rect.tile[data-status=succeeded]').length === n",
                arg=final["planned_trial_runs"],
            )
            assert final["best"]["id"] in page.inner_text("#best")
            shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "page.png")
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000

            # A new sweep of two Hyperband iterations joins the list; clicking it
            # shows it, each iteration's brackets apart.
            spec = curve_spec(max_iterations=3, seed=8)
            spec["matrix"]["iterations"] = 2
            second = c.submit(yaml.safe_dump(spec))
            page.click(f"nav#sweeps a[data-sweep-id='{second}']")
            page.wait_for_function(
                "id => document.querySelector('#sweep-id')?.textContent === id", arg=second
            )
            page.wait_for_selector("#sweep-status.succeeded")
            assert page.locator("#brackets figure.bracket").count() == 4  # (s=1, 0) twice
            text = page.inner_text("#brackets")  # counted from 0, as the API does
            assert "iteration 0 · bracket s=1" in text and "iteration 1 · bracket s=0" in text
            runs = c.status(second)["planned_trial_runs"]
            page.wait_for_function(
                "n => document.querySelectorAll('#brackets svg rect.tile[data-status=succeeded]').length === n",
                arg=runs,
            )
            assert page.url.endswith("#" + second)
            assert errors == []  # no script error, nothing refused by the CSP
        finally:
            context.close()


def test_without_a_session_the_api_and_page_refuse_a_browser(tmp_path: Path) -> None:
    """The cookie is the only way in for a browser, and it only reads."""
    with daemon_in_thread(tmp_path, token=TOKEN, slots=1) as url:
        with httpx.Client(base_url=url) as http:
            page = http.get("/")
            assert page.status_code == 200 and 'name="token"' in page.text
            assert "content-security-policy" in page.headers
            assert http.get("/v1/sweeps").status_code == 401
            refused = http.post("/login", data={"token": "wrong-wrong-wrong"})
            assert refused.status_code == 401 and "set-cookie" not in refused.headers
            big = http.post("/login", content=b"token=" + b"x" * 10_000)
            assert big.status_code == 413
            ok = http.post("/login", data={"token": TOKEN})
            assert ok.status_code == 303
            set_cookie = ok.headers["set-cookie"]
            assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
            session = ok.cookies["hbd_session"]
        with httpx.Client(base_url=url, cookies={"hbd_session": session}) as browser_like:
            assert browser_like.get("/v1/sweeps").json() == []
            assert "ui/app.js" in browser_like.get("/").text
            # Reading only: a cookie never authorizes a change.
            assert browser_like.post("/v1/sweeps", content="{}").status_code == 401
        expires, _, mac = session.partition(".")
        for forged in (f"{int(expires) + 1}.{mac}", f"{expires}.{'0' * len(mac)}", "1.2", ""):
            with httpx.Client(base_url=url, cookies={"hbd_session": forged}) as forger:
                assert forger.get("/v1/sweeps").status_code == 401
                assert 'name="token"' in forger.get("/").text
        with httpx.Client(base_url=url) as http:
            assert http.get("/ui/app.js").status_code == 200
            # Only the listed files: nothing else of the package, no path tricks.
            for path in ("/ui/login.html", "/ui/..%2fapp.py", "/ui/%2e%2e/app.py", "/ui/"):
                assert http.get(path).status_code == 404, path
