"""Make the README's picture of the web page: a real sweep, caught halfway.

    .venv/bin/python -m tests.web.screenshot docs/web-page.png

Not a test (pytest does not collect it): it runs a daemon with a local
executor and a 27-step sweep of slow-ish trials (a few fail), waits until
about half of the trial runs have ended, and screenshots the page.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import hbd
from tests.live_daemon import curve_yaml, daemon_in_thread
from tests.web.test_page import CHROMIUM, CHROMIUM_ARGS, TOKEN


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory() as tmp,
        daemon_in_thread(Path(tmp), token=TOKEN, slots=4) as url,
        hbd.Client(url, token=TOKEN) as client,
        sync_playwright() as p,
    ):
        sweep = client.submit(
            curve_yaml(max_iterations=27, sleep=1.2, concurrency=4, fail_above=0.93, seed=5)
        )
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1160})
        page.goto(url + "/")
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_selector("#sweep-id")
        planned = client.status(sweep)["planned_trial_runs"]
        ended = ("succeeded", "failed", "cancelled")
        while sum(client.status(sweep)["trials"].get(s, 0) for s in ended) < 0.55 * planned:
            time.sleep(0.5)
        time.sleep(1.0)  # let the page render the last events
        # Show a failed trial's reason in the side panel, as a user clicking it would.
        page.evaluate(
            "() => document.querySelector('rect.tile[data-status=failed]')"
            "?.dispatchEvent(new MouseEvent('click', {bubbles: true}))"
        )
        time.sleep(0.5)
        page.screenshot(path=str(out))  # the first screen: brackets, curves, best trial
        browser.close()
        client.cancel(sweep)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
