"""What a user sees around a run: real `hbd` processes against a real daemon,
their stdout piped as a script or a log file would take it."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.e2e.conftest import Live, sweep_yaml

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def hbd(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    result = await anyio.run_process([sys.executable, "-m", "hbd", *args], check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"hbd {args} exited {result.returncode}: {result.stderr.decode()}")
    return result


async def test_a_failing_sweep_stops_early_and_says_why(live: Live, tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    # every trial exits 1 after printing "x=... is too large" on stderr
    spec.write_text(sweep_yaml(tmp_path / "log.jsonl", fail_above=-1.0, max_iterations=27))
    done = await hbd("submit", str(spec), "--wait", "--url", live.url, check=False)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 1, err
    sweep_id = out.splitlines()[0]
    # piped: plain progress lines, no terminal codes
    assert f"sweep {sweep_id}: 0/" in out
    assert "\x1b[" not in out
    assert "early stopping: the first 10 trial runs all failed" in out
    # a run or two may still fail while the others are being cancelled
    failures = next(line for line in out.splitlines() if " x exit code 1" in line)
    assert int(failures.split()[0]) >= 10, out
    assert "early stopping: early stopping" not in out
    assert "is too large" in out  # a failed trial's stderr tail
    logs_line = next(line for line in out.splitlines() if line.startswith("its logs: hbd logs "))
    trial_id = logs_line.split()[4]  # "its logs: hbd logs TRIAL --stderr"

    stderr_log = await hbd("logs", trial_id, "--stderr", "--url", live.url)
    assert b"is too large" in stderr_log.stdout
    assert (await hbd("logs", trial_id, "--url", live.url)).stdout == b""
    missing = await hbd("logs", f"{sweep_id}-s0-r0-c999", "--url", live.url, check=False)
    assert missing.returncode == 2 and missing.stderr.decode().startswith("error: no trial")

    # scripts: whole ids, grep-able, several formats
    table = (await hbd("trials", sweep_id, "--url", live.url)).stdout.decode()
    assert table.splitlines()[0].split("\t")[:2] == ["trial", "bracket"]
    assert any(line.startswith(f"{trial_id}\t") for line in table.splitlines())
    as_json = json.loads(
        (await hbd("trials", sweep_id, "--format", "json", "--url", live.url)).stdout
    )
    assert sum(t["status"] == "failed" for t in as_json) >= 10
    as_csv = list(
        csv.DictReader(
            io.StringIO(
                (
                    await hbd("trials", sweep_id, "--format", "csv", "--url", live.url)
                ).stdout.decode()
            )
        )
    )
    assert len(as_csv) == len(as_json) and as_csv[0]["id"] == as_json[0]["id"]

    # the same answers read from the database while the daemon holds it
    local = (await hbd("status", sweep_id, "--db", str(live.db))).stdout.decode()
    assert "early stopping: the first 10 trial runs all failed" in local
    assert "is too large" in local
    bogus = await hbd("trials", sweep_id, "--status", "bogus", "--url", live.url, check=False)
    assert bogus.returncode == 2 and "Traceback" not in bogus.stderr.decode()


async def test_results_hold_every_metric_sorted_and_the_db_reads_them_too(
    live: Live, tmp_path: Path
) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(sweep_yaml(tmp_path / "log.jsonl"))
    sweep_id = (
        (await hbd("submit", str(spec), "--wait", "--url", live.url)).stdout.decode().split()[0]
    )
    rows = json.loads(
        (await hbd("results", sweep_id, "--format", "json", "--top", "3", "--url", live.url)).stdout
    )
    assert len(rows) == 3
    losses = [r["metric"] for r in rows]
    assert losses == sorted(losses)
    detail = (await live.client.get(f"/v1/sweeps/{sweep_id}")).json()
    best = detail["best"]
    assert rows[0]["id"] == best["id"]
    # The best per resource, lowest first; the sweep's best is the last (highest resource).
    per = detail["best_per_resource"]
    assert per[-1]["id"] == best["id"] and per[-1]["resource"] == detail["max_iterations"]
    assert [p["resource"] for p in per] == sorted(p["resource"] for p in per)
    status = (await hbd("status", sweep_id, "--db", str(live.db))).stdout.decode()
    assert "best per steps" in status and best["id"] in status
    assert set(rows[0]["metrics"]) == {"loss", "resumed_from"}  # not only the sweep's metric
    assert rows[0]["started_at"].endswith("Z") and rows[0]["duration"] >= 0

    by_db = json.loads(
        (await hbd("results", sweep_id, "--format", "json", "--db", str(live.db))).stdout
    )
    by_api = json.loads(
        (await hbd("results", sweep_id, "--format", "json", "--url", live.url)).stdout
    )
    assert by_db == by_api

    text = (
        await hbd(
            "results",
            sweep_id,
            "--format",
            "csv",
            "--sort",
            "resumed_from",
            "--reverse",
            "--url",
            live.url,
        )
    ).stdout.decode()
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert "metrics.resumed_from" in parsed[0] and "metrics.loss" in parsed[0]
    values = [float(r["metrics.resumed_from"]) for r in parsed]
    assert values == sorted(values, reverse=True)

    listing = (await hbd("status", "--db", str(live.db))).stdout.decode().splitlines()
    assert listing[0] == "id\tname\tstatus\tbest\treason"
    assert any(line.startswith(f"{sweep_id}\t") and "\tsucceeded\t" in line for line in listing)


async def test_a_wrong_metric_name_says_which_metrics_trials_reported(
    live: Live, tmp_path: Path
) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(sweep_yaml(tmp_path / "log.jsonl").replace("name: loss", "name: val_loss"))
    done = await hbd("submit", str(spec), "--wait", "--url", live.url, check=False)
    out = done.stdout.decode()
    assert done.returncode == 1
    # runs without the metric fail, so the first-failures rule stops this one too
    assert "never reported metric 'val_loss'" in out
    assert re.search(
        r"no trial reported 'val_loss'; trials reported: loss \(\d+\), resumed_from", out
    ), out


async def test_db_reading_refuses_what_is_not_an_hbd_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite" * 100)
    for args in (
        ("status", "--db", str(junk)),
        ("status", "--db", str(tmp_path / "missing.db")),
    ):
        result = await hbd(*args, check=False)
        err = result.stderr.decode()
        assert result.returncode == 2 and err.startswith("error: --db ") and err.count("\n") == 1, (
            err
        )
    assert not (tmp_path / "missing.db").exists()  # read-only: nothing created


async def test_hbd_run_piped_says_where_the_database_is_and_shows_progress(tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(sweep_yaml(tmp_path / "log.jsonl"))
    db = tmp_path / "sub" / "run.db"
    out = (await hbd("run", str(spec), "--db", str(db), "--local-executor", "3")).stdout.decode()
    lines = out.splitlines()
    assert lines[0].startswith("sweep sw") and f"database {db.resolve()}" in lines[0]
    sweep_id = lines[0].split()[1].rstrip(":")
    progress = [line for line in lines if f" sweep {sweep_id}: " in line]
    assert progress and "trial runs ended" in progress[0]
    assert any("rung 0 decided: promoted" in line for line in progress), out
    assert "\x1b[" not in out and "best: loss=" in out


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("HBD_")}


async def doctor(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process(
        [sys.executable, "-m", "hbd", "doctor", *args], check=False, env=_clean_env()
    )


async def test_doctor_asks_the_running_daemon_not_its_own_defaults(
    live: Live, tmp_path: Path
) -> None:
    # This host's defaults have no executors; the daemon it asks has a local one.
    done = await doctor("--url", live.url, "--db", str(live.db))
    out = done.stdout.decode()
    assert done.returncode == 0, out
    assert f"ok    daemon {live.url}: running hbd" in out
    assert "executor local (" in out and "healthy, 4 slot(s)" in out
    assert "none configured" not in out and "FAIL" not in out


async def test_doctor_with_an_unreachable_url_fails(tmp_path: Path) -> None:
    done = await doctor("--url", "http://127.0.0.1:9", "--db", str(tmp_path / "x.db"))
    assert done.returncode == 1
    assert "FAIL  daemon http://127.0.0.1:9: cannot reach" in done.stdout.decode()
    bad = await doctor("--url", "127.0.0.1:9")
    assert bad.returncode == 2 and "use http://127.0.0.1:9" in bad.stderr.decode()


async def test_a_daemon_without_executors_warns_at_submit_and_wait_says_why(
    tmp_path: Path,
) -> None:
    from hbd.api.server import DaemonOptions, serve_daemon

    spec = tmp_path / "sweep.yaml"
    spec.write_text(sweep_yaml(tmp_path / "log.jsonl"))
    async with anyio.create_task_group() as tg:
        running = await tg.start(serve_daemon, DaemonOptions(db=tmp_path / "d.db", port=0))
        plain = await hbd("submit", str(spec), "--url", running.url)
        assert "warning: the daemon has no executor" in plain.stderr.decode()

        done = await doctor("--url", running.url, "--db", str(tmp_path / "d.db"))
        assert done.returncode == 1
        assert f"FAIL  daemon {running.url}: has no executor" in done.stdout.decode()

        process = await anyio.open_process(
            [
                sys.executable,
                "-m",
                "hbd",
                "submit",
                str(spec),
                "--id",
                "waits",
                "--wait",
                "--url",
                running.url,
            ]
        )
        try:
            assert process.stdout is not None
            seen = b""
            with anyio.fail_after(60):
                async for chunk in process.stdout:
                    seen += chunk
                    if b"waiting for capacity: the daemon has no executor" in seen:
                        break
        finally:
            process.kill()
            await process.wait()
        tg.cancel_scope.cancel()


async def test_status_shows_the_best_while_the_sweep_runs(live: Live, tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(sweep_yaml(tmp_path / "log.jsonl", sleep=1.0, concurrency=2))
    sweep_id = (await hbd("submit", str(spec), "--url", live.url)).stdout.decode().strip()
    try:
        with anyio.fail_after(60):
            while True:
                one = (await hbd("status", sweep_id, "--url", live.url)).stdout.decode()
                listing = (await hbd("status", "--url", live.url)).stdout.decode()
                row = next(line for line in listing.splitlines() if line.startswith(sweep_id))
                if "best so far: loss=" in one and row.split("\t")[3] != "-":
                    break
                await anyio.sleep(0.2)
        assert row.split("\t")[2] == "running" and float(row.split("\t")[3]) > 0
        by_db = (await hbd("status", sweep_id, "--db", str(live.db))).stdout.decode()
        assert "best so far: loss=" in by_db
    finally:
        await hbd("cancel", sweep_id, "--url", live.url)
        await live.wait_finished(sweep_id)


async def test_logs_follow_prints_a_running_trials_output_to_its_end(
    live: Live, tmp_path: Path
) -> None:
    script = tmp_path / "talk.py"
    script.write_text(
        "import time, hbd\n"
        "for i in range(4):\n"
        "    print(f'line {i}', flush=True)\n"
        "    time.sleep(0.5)\n"
        "hbd.report(loss=1.0)\n"
    )
    text = sweep_yaml(tmp_path / "log.jsonl", max_iterations=1, concurrency=1)
    spec_data = __import__("yaml").safe_load(text)
    spec_data["component"]["container"] = {"command": [sys.executable, str(script)], "args": []}
    spec = tmp_path / "sweep.yaml"
    spec.write_text(__import__("yaml").safe_dump(spec_data))
    sweep_id = (await hbd("submit", str(spec), "--url", live.url)).stdout.decode().strip()
    trial_id = f"{sweep_id}-s0-r0-c0"
    with anyio.fail_after(30):  # wait until it runs, then follow it to its end
        while (await live.client.get(f"/v1/sweeps/{sweep_id}/trials")).json()[0]["status"] not in (
            "running",
            "succeeded",
        ):
            await anyio.sleep(0.1)
    followed = await hbd("logs", trial_id, "--follow", "--url", live.url)
    assert followed.stdout.decode().splitlines() == [f"line {i}" for i in range(4)]
    await live.wait_finished(sweep_id)
    local = await hbd("logs", trial_id, "--db", str(live.db))
    assert local.stdout == followed.stdout


async def test_serve_says_where_its_database_is(tmp_path: Path) -> None:
    import os
    import signal

    db = tmp_path / "state" / "hbd.db"
    err = tmp_path / "err.log"
    with err.open("wb") as sink:
        process = await anyio.open_process(
            [
                sys.executable,
                "-m",
                "hbd",
                "serve",
                "--port",
                "0",
                "--db",
                str(db),
                "--local-executor",
                "0",
            ],
            stderr=sink,
            env=_clean_env(),
            start_new_session=True,
        )
        try:
            with anyio.fail_after(60):
                while "hbd serve ready" not in err.read_text():
                    await anyio.sleep(0.1)
            ready = next(
                json.loads(line)
                for line in err.read_text().splitlines()
                if "hbd serve ready" in line
            )
            assert ready["db"] == str(db.resolve()) and ready["url"].startswith("http://127.0.0.1:")
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            with anyio.fail_after(30):
                await process.wait()


async def test_the_first_failures_setting_is_recorded_in_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import httpx

    from hbd.api.server import DaemonOptions, serve_daemon
    from hbd.errors import ConfigError
    from hbd.settings import DaemonSettings

    monkeypatch.setenv("HBD_FIRST_FAILURES_STOP", "3")
    assert DaemonSettings.load().first_failures_stop == 3
    monkeypatch.setenv("HBD_FIRST_FAILURES_STOP", "-1")
    with pytest.raises(ConfigError, match="first_failures_stop"):
        DaemonSettings.load()
    monkeypatch.delenv("HBD_FIRST_FAILURES_STOP")
    assert DaemonSettings.load().first_failures_stop == 10

    text = sweep_yaml(tmp_path / "log.jsonl", fail_above=-1.0, concurrency=1)
    opts = DaemonOptions(
        db=tmp_path / "d.db", port=0, local_slots=1, workdir=tmp_path / "w", first_failures_stop=3
    )
    async with anyio.create_task_group() as tg:
        running = await tg.start(serve_daemon, opts)
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as http:
            await http.post("/v1/sweeps", params={"id": "three"}, content=text)
            with anyio.fail_after(60):
                while (detail := (await http.get("/v1/sweeps/three")).json())[
                    "status"
                ] == "running":
                    await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    assert detail["status"] == "failed"
    assert "the first 3 trial runs all failed" in detail["reason"]
    assert detail["trials"]["failed"] == 3  # one slot: nothing else was running
    # the log says what the sweep started with, for every replay after a restart
    with sqlite3.connect(tmp_path / "d.db") as conn:
        (payload,) = conn.execute(
            "SELECT payload FROM events WHERE type = 'sweep.submitted'"
        ).fetchone()
    assert json.loads(payload)["first_failures_stop"] == 3
