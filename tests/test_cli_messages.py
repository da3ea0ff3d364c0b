"""The CLI's messages and output for people and scripts (no daemon needed)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from hbd.cli import main
from hbd.cli.progress import SweepProgress, counts_line
from hbd.cli.sweeps import explain, results_rows, sort_rows
from hbd.client import Client, ClientError, Event, error_detail, url_problem

ROOT = Path(__file__).resolve().parent.parent
SERVER_MODULES = ("fastapi", "uvicorn", "starlette")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- fast commands


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["validate", "examples/reference-fixed.yaml"], ["status", "--help"]],
    ids=["help", "validate", "status-help"],
)
def test_help_and_validate_do_not_import_the_web_server(argv: list[str]) -> None:
    # A fresh interpreter, as a user's shell starts one: what did the command load?
    probe = (
        "import sys, runpy\n"
        f"sys.argv = ['hbd', *{argv!r}]\n"
        "try:\n    runpy.run_module('hbd', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_MODULES!r})\n"
        "print('LOADED', bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "LOADED []" in done.stdout, done.stdout[-500:] + done.stderr[-2000:]


def test_validate_does_not_load_numpy() -> None:
    # Reading a spec samples nothing: numpy (a third of the start-up) waits for a draw.
    probe = (
        "import sys\nfrom hbd.cli import main\n"
        "assert main(['validate', 'examples/reference-fixed.yaml']) == 0\n"
        "print('numpy' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip().endswith("False"), done.stdout + done.stderr


def test_help_loads_no_third_party_library_at_all() -> None:
    probe = (
        "import sys\nfrom hbd.cli import build_parser\nbuild_parser()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'rich', 'pydantic', 'numpy', 'httpx', 'anyio', 'yaml', 'structlog', 'aiosqlite'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_cli_spec_limit_is_the_daemons_body_limit() -> None:
    from hbd.api.asgi import MAX_REQUEST_BODY_BYTES
    from hbd.cli.base import MAX_SPEC_BYTES
    from hbd.cli.remote import DEFAULT_URL
    from hbd.client import DEFAULT_URL as CLIENT_URL

    assert MAX_SPEC_BYTES == MAX_REQUEST_BODY_BYTES
    assert DEFAULT_URL == CLIENT_URL


# ---------------------------------------------------------------- operator messages


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("127.0.0.1:8765", "use http://127.0.0.1:8765"),
        ("localhost:8765", "use http://localhost:8765"),
        ("ftp://host", "not an http(s) URL"),
        ("http://", "not an http(s) URL"),
        ("http://h:99999", "not a URL"),
    ],
)
def test_a_url_without_a_scheme_is_a_usage_error_with_the_fix(
    capsys: pytest.CaptureFixture[str], url: str, fix: str
) -> None:
    code, out, err = run(capsys, "status", "--url", url)
    assert code == 2 and out == ""
    assert err.startswith("error: --url: ") and fix in err and err.count("\n") == 1, err


def test_hbd_url_from_the_environment_is_checked_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HBD_URL", "127.0.0.1:1")
    code, _, err = run(capsys, "trials", "sw1")
    assert code == 2 and err.startswith("error: HBD_URL: ") and "http://127.0.0.1:1" in err


def test_good_urls_pass() -> None:
    for url in ("http://127.0.0.1:8765", "https://hbd.example:443/", "http://[::1]:8765"):
        assert url_problem(url) is None


def _client(handler: Any, token: str | None) -> Client:
    return Client("http://d", token=token, transport=httpx.MockTransport(handler))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("token", "says"),
    [("wrong", "token rejected by the daemon at http://d"), (None, "wants a token: set HBD_TOKEN")],
)
async def test_a_wrong_token_is_rejected_not_missing(token: str | None, says: str) -> None:
    async with _client(lambda r: httpx.Response(401, json={"detail": "no"}), token) as c:
        with pytest.raises(ClientError) as info:
            await c.sweeps()
    assert says in str(info.value) and info.value.status == 401
    if token:
        assert "set HBD_TOKEN" not in str(info.value)


@pytest.mark.anyio
async def test_a_pydantic_error_list_becomes_one_line() -> None:
    detail = [
        {
            "type": "string_pattern_mismatch",
            "loc": ["query", "status"],
            "msg": "String should match pattern '^(a|b)$'",
            "input": "bogus",
        }
    ]
    async with _client(lambda r: httpx.Response(422, json={"detail": detail}), None) as c:
        with pytest.raises(ClientError) as info:
            await c.trials("sw")
    assert str(info.value) == "status: String should match pattern '^(a|b)$' (HTTP 422)"


def test_error_detail_is_one_line_whatever_the_daemon_sent() -> None:
    assert error_detail("two\nlines") == "two lines"
    assert error_detail([{"msg": "m"}, "x", {"loc": ["body", "a", 0], "msg": "bad"}]) == (
        "m; x; a.0: bad"
    )
    assert error_detail([]) == "invalid request"


def test_trials_refuses_an_unknown_status_before_asking(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "trials", "sw", "--status", "bogus", "--url", "http://127.0.0.1:9")
    assert code == 2 and "invalid choice: 'bogus'" in err and "Traceback" not in err


# ---------------------------------------------------------------- why a sweep failed


def _detail(status: str, best: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "sw1",
        "status": status,
        "metric": {"name": "val_loss", "optimization": "minimize"},
        "best": best,
        "trials": {},
    }


def _trial(i: int, status: str, reason: str | None = None, **metrics: float) -> dict[str, Any]:
    return {"id": f"sw1-s0-r0-c{i}", "status": status, "reason": reason, "metrics": metrics}


def test_explain_gives_top_reasons_with_counts_a_stderr_tail_and_the_logs_command() -> None:
    trials = [
        *(_trial(i, "failed", "exit code 127") for i in range(7)),
        *(_trial(i, "failed", "timed out") for i in range(7, 10)),
        _trial(10, "cancelled", "stopping"),
    ]
    tail = "\n".join(f"line {i}" for i in range(20)) + "\nbash: trian.py: command not found\n"
    lines = explain(
        _detail("failed"),
        trials,
        {"trial_id": "sw1-s0-r0-c3", "payload": {"stderr_tail": tail}},
    )
    text = "\n".join(lines)
    assert "10 of 11 trial runs failed" in text
    assert lines[1] == "     7 x exit code 127" and lines[2] == "     3 x timed out"
    assert "  | bash: trian.py: command not found" in lines
    assert "line 0" not in text  # only the last lines
    assert "its logs: hbd logs sw1-s0-r0-c3 --stderr" in lines


def test_explain_names_the_metrics_trials_did_report() -> None:
    trials = [_trial(i, "succeeded", None, loss=0.1 * i, acc=0.5) for i in range(4)]
    lines = explain(_detail("failed"), trials, None)
    assert lines == [
        "no trial reported 'val_loss'; trials reported: loss (4), acc (4). "
        "Is matrix.metric.name right?"
    ]


def test_explain_says_nothing_about_a_sweep_that_went_well() -> None:
    trials = [_trial(0, "succeeded", None, val_loss=1.0)]
    assert explain(_detail("succeeded", best={"metric": 1.0}), trials, None) == []


# ---------------------------------------------------------------- results for scripts


def _api_trial(i: int, status: str, metric: float | None, **metrics: float) -> dict[str, Any]:
    return {
        "id": f"t{i}",
        "bracket": 0,
        "rung": 0,
        "config": {"x": i},
        "resource": 1,
        "status": status,
        "metric": metric,
        "parent": None,
        "metrics": metrics,
        "started_at": 1_700_000_000.0 + i,
        "ended_at": 1_700_000_002.5 + i if status != "running" else None,
    }


def test_results_rows_carry_every_metric_and_the_times() -> None:
    rows = results_rows([_api_trial(1, "succeeded", 0.5, loss=0.5, acc=0.9)])
    assert rows[0]["metrics"] == {"loss": 0.5, "acc": 0.9}
    assert rows[0]["started_at"] == "2023-11-14T22:13:21.000Z"
    assert rows[0]["duration"] == 2.5


def test_sort_puts_the_best_first_failures_last_and_takes_any_metric() -> None:
    trials = [
        _api_trial(1, "succeeded", 0.5, loss=0.5, acc=0.7),
        _api_trial(2, "failed", None, loss=0.01),
        _api_trial(3, "succeeded", 0.2, loss=0.2, acc=0.9),
        _api_trial(4, "running", None),
    ]
    rows = results_rows(trials)
    ids = lambda rs: [r["id"] for r in rs]  # noqa: E731
    assert ids(sort_rows(rows, None, metric="loss", minimize=True, reverse=False)) == [
        "t3",
        "t1",
        "t2",
        "t4",
    ]
    assert ids(sort_rows(rows, None, metric="loss", minimize=False, reverse=False))[:2] == [
        "t1",
        "t3",
    ]
    assert ids(sort_rows(rows, "acc", metric="loss", minimize=True, reverse=True))[:2] == [
        "t3",
        "t1",
    ]
    assert ids(sort_rows(rows, "duration", metric="loss", minimize=True, reverse=False))[-1] == "t4"


def test_sort_by_an_unknown_key_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from hbd.cli.base import UserError

    with pytest.raises(UserError, match="--sort nope: no such field"):
        sort_rows(
            results_rows([_api_trial(1, "succeeded", 0.5, loss=0.5)]),
            "nope",
            metric="loss",
            minimize=True,
            reverse=False,
        )


# ---------------------------------------------------------------- progress anywhere


def _progress_detail(ended: int, best: float | None) -> dict[str, Any]:
    return {
        "metric": {"name": "loss"},
        "planned_trial_runs": 22,
        "trials": {"succeeded": ended, "running": 2, "scheduled": 3},
        "best": {"metric": best} if best is not None else None,
    }


def test_plain_progress_prints_at_intervals_and_on_every_rung_decision() -> None:
    now = [0.0]
    buf = io.StringIO()
    with SweepProgress("sw1", interactive=False, file=buf, clock=lambda: now[0], interval=10) as p:
        p.detail(_progress_detail(0, None))  # first poll: a line
        now[0] = 3
        p.detail(_progress_detail(1, 0.5))  # too soon: nothing
        p.event(
            Event(
                seq=9,
                type="rung.decided",
                sweep_id="sw1",
                trial_id=None,
                at=0,
                payload={
                    "bracket": 2,
                    "rung": 0,
                    "promoted": ["a", "b"],
                    "stopped": ["c"],
                    "cutoff": 0.4,
                },
            )
        )
        now[0] = 11
        p.detail(_progress_detail(4, 0.25))  # due: a line
        now[0] = 30
        p.detail(_progress_detail(4, 0.25))  # due but unchanged: nothing
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].endswith("sweep sw1: 0/22 trial runs ended, 2 running, 3 queued")
    assert lines[1].endswith("bracket 2 rung 0 decided: promoted 2, stopped 1, cutoff 0.4")
    assert lines[2].endswith(
        "4/22 trial runs ended (4 ok, 0 failed), 2 running, 3 queued, best loss=0.25"
    )
    assert "\x1b" not in buf.getvalue()  # no terminal control codes in a log file


def test_counts_line_does_not_count_queued_trials_as_running() -> None:
    line = counts_line(
        {"planned_trial_runs": 4, "trials": {"scheduled": 4}, "metric": {"name": "l"}}
    )
    assert "0 running, 4 queued" in line


# ---------------------------------------------------------------- tables off a terminal


def test_tables_off_a_terminal_are_tab_separated_and_never_truncated(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hbd.cli.base import output

    long_id = "sw" + "abcdef0123" * 8
    output().rows(("id", "status"), [(long_id, "succeeded"), ("x\ty", "a\nb")])
    out = capsys.readouterr().out
    assert out.splitlines() == ["id\tstatus", f"{long_id}\tsucceeded", "x y\ta b"]


def test_csv_of_results_has_a_column_per_metric(capsys: pytest.CaptureFixture[str]) -> None:
    from hbd.cli.sweeps import RESULT_FIELDS, _write_csv

    _write_csv(
        [*RESULT_FIELDS, "metrics.acc"],
        [{**{k: None for k in RESULT_FIELDS}, "config": {"x": 1}, "metrics.acc": 0.5}],
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert json.loads(rows[0]["config"]) == {"x": 1} and rows[0]["metrics.acc"] == "0.5"


# ---------------------------------------------------------------- hbd watch


def _watch_state() -> Any:
    from hbd.cli.watch import WatchState

    detail = {
        "id": "sw1",
        "metric": {"name": "loss", "optimization": "minimize"},
        "brackets": [{"bracket": 0, "rungs": [{"rung": 0, "planned": 5, "resource": 9}]}],
    }
    state = WatchState.from_detail(detail)
    for i in range(5):
        payload = {"bracket": 0, "rung": 0, "resource": 9, "config": {"x": i}}
        state.apply(
            Event(
                seq=i + 1,
                type="trial.scheduled",
                sweep_id="sw1",
                trial_id=f"t{i}",
                at=0,
                payload=payload,
            )
        )
    state.apply(Event(seq=6, type="trial.running", sweep_id="sw1", trial_id="t0", at=0, payload={}))
    return state


def _render(state: Any) -> str:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(state.render())
    return buf.getvalue()


def test_watch_does_not_count_queued_trials_as_running() -> None:
    text = _render(_watch_state())
    assert "running (1):" in text and "t0 running" in text
    assert "queued: 4 trial run(s) waiting for a free slot" in text
    assert "t1 queued" not in text


def test_watch_shows_an_unreachable_daemon_until_it_is_heard_again() -> None:
    state = _watch_state()
    state.unreachable = "ConnectError (attempt 2 of 8)"
    assert "daemon unreachable: ConnectError (attempt 2 of 8); retrying" in _render(state)
    state.apply(Event(seq=7, type="trial.running", sweep_id="sw1", trial_id="t1", at=0, payload={}))
    assert "unreachable" not in _render(state)


def _event(seq: int, type: str, tid: str | None, **payload: Any) -> Event:
    return Event(seq=seq, type=type, sweep_id="sw1", trial_id=tid, at=0, payload=payload)


def test_watch_counts_each_iteration_apart_and_adds_an_extended_one() -> None:
    from hbd.cli.watch import WatchState

    rungs = [{"rung": 0, "planned": 2, "resource": 1}, {"rung": 1, "planned": 1, "resource": 3}]
    state = WatchState.from_detail(
        {
            "id": "sw1",
            "metric": {"name": "loss", "optimization": "minimize"},
            "brackets": [{"iteration": it, "bracket": 1, "rungs": rungs} for it in (0, 1)],
        }
    )
    seq = 0
    for it in (0, 1, 2):  # iteration 2 came from hbd extend: not in the detail
        for i in range(2):
            tid = f"i{it}c{i}"
            seq += 1
            state.apply(
                _event(seq, "trial.scheduled", tid, iteration=it, bracket=1, rung=0, resource=1)
            )
            seq += 1
            state.apply(_event(seq, "trial.succeeded", tid, metric=float(i)))
    assert {k: (v.scheduled, v.ended, v.planned) for k, v in state.rungs.items() if k[2] == 0} == {
        (0, 1, 0): (2, 2, 2),
        (1, 1, 0): (2, 2, 2),
        (2, 1, 0): (2, 2, 2),
    }
    lines = [line.split() for line in _render(state).splitlines()]
    assert ["2", "1", "0", "1"] == next(row[:4] for row in lines if row[:1] == ["2"])


@pytest.mark.parametrize(
    ("order", "expected"),
    [("ascending-after-first", [1, 0, 0, 1, 0, 1]), ("hyperband", [1, 0, 1, 0, 1, 0])],
)
def test_watch_lists_the_brackets_in_the_order_they_run(order: str, expected: list[int]) -> None:
    from hbd.cli.watch import WatchState

    rungs = [{"rung": 0, "planned": 1, "resource": 1}]
    state = WatchState.from_detail(
        {
            "id": "sw1",
            "metric": {"name": "loss", "optimization": "minimize"},
            "bracket_order": order,
            "brackets": [
                {"iteration": it, "bracket": b, "rungs": rungs}
                for it in (0, 1)
                for b in ((1, 0) if it == 0 or order == "hyperband" else (0, 1))
            ],
        }
    )
    for seq, it in enumerate((2, 2), start=1):  # an iteration hbd extend added later
        b = seq - 1
        state.apply(_event(seq, "trial.scheduled", f"t{seq}", iteration=it, bracket=b, rung=0))
    rows = [line.split() for line in _render(state).splitlines()]
    listed = [int(r[1]) for r in rows if len(r) > 2 and r[0] in "012" and r[1] in "01"]
    assert listed == expected


def test_watch_best_is_the_best_run_at_the_highest_resource_reached() -> None:
    state = _watch_state()
    state.apply(_event(7, "trial.succeeded", "t0", metric=0.5))
    assert state.best == (9, 0.5, "t0")
    state.apply(_event(8, "trial.scheduled", "deep", bracket=0, rung=1, resource=27, config={}))
    state.apply(_event(9, "trial.succeeded", "deep", metric=0.9))  # worse, but deeper
    state.apply(_event(10, "trial.succeeded", "t1", metric=0.1))  # better, but shallower
    assert state.best == (27, 0.9, "deep")
    assert "best loss 0.9 at resource 27  deep" in _render(state)


@pytest.mark.anyio
async def test_the_event_stream_reports_each_failed_reconnect() -> None:
    heard: list[str] = []

    class Heard(Exception):
        pass

    def on_retry(problem: str) -> None:
        heard.append(problem)
        raise Heard

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with _client(refuse, None) as c:
        with pytest.raises(Heard):
            async for _ in c.events("sw1", on_retry=on_retry):
                pass
    assert heard == ["ConnectError: connection refused (attempt 1 of 8)"]


# ---------------------------------------------------------------- ports and databases


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "run", "executor"])
def test_a_port_in_use_is_named_with_the_ways_out(tmp_path: Path, command: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = {
            "serve": ["serve", "--db", str(tmp_path / "d.db"), "--local-executor", "0"],
            "run": ["run", "examples/reference-fixed.yaml", "--db", str(tmp_path / "r.db")],
            "executor": ["executor", "--workdir", str(tmp_path / "w")],
        }[command]
        done = subprocess.run(
            [sys.executable, "-m", "hbd", *argv, "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert f"port {port} on 127.0.0.1 is already in use" in last, done.stderr
    assert "--port" in last and "hbd daemon already running" in last
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- validate checks the command


def _spec_with_command(tmp_path: Path, command: list[str], sub: str = "specs") -> Path:
    import yaml

    data = yaml.safe_load((ROOT / "examples" / "reference-fixed.yaml").read_text())
    data["component"]["container"]["command"] = command
    # The example's `image` has its own warning (not used on a host); this is about the command.
    data["component"]["container"].pop("image", None)
    folder = tmp_path / sub
    folder.mkdir(exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("command", "warning"),
    [
        (["trian-no-such-cmd"], "command 'trian-no-such-cmd' not found on PATH or in"),
        (["./nope.sh"], "./nope.sh: no such file (looked at "),
        (["/no/such/program"], "/no/such/program: no such file"),
        (["./data.txt"], "is not an executable file"),
        (["tool.sh"], "'tool.sh' is not on PATH but is beside the spec"),
    ],
)
def test_validate_warns_when_the_command_cannot_start(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str], warning: str
) -> None:
    path = _spec_with_command(tmp_path, command)
    (path.parent / "data.txt").write_text("x")
    (path.parent / "tool.sh").write_text("#!/bin/sh\n")
    (path.parent / "tool.sh").chmod(0o755)
    code, out, err = run(capsys, "validate", str(path))
    assert code == 0 and out.startswith("ok: ")
    assert err.startswith("warning: container.command[0]: ") and warning in err, err
    assert err.count("\n") == 1


@pytest.mark.parametrize("command", [["python3", "x.py"], ["./run.sh"], ["{{ lr }}"]])
def test_validate_finds_commands_on_path_and_beside_the_spec(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    path = _spec_with_command(tmp_path, command)
    (path.parent / "run.sh").write_text("#!/bin/sh\n")
    (path.parent / "run.sh").chmod(0o755)
    monkeypatch.chdir(tmp_path)  # not the spec's folder: ./run.sh resolves against the spec's
    code, _, err = run(capsys, "validate", str(path))
    assert code == 0 and err == "", err


def test_explain_says_how_to_report_when_trials_reported_nothing() -> None:
    trials = [_trial(0, "failed", "never reported metric 'val_loss'")]
    lines = explain(_detail("failed"), trials, None)
    assert lines[-1].startswith("trials reported no metrics: report 'val_loss' with hbd.report")
    crashed = [_trial(0, "failed", "exit code 127")]
    assert not any(
        "report" in line and "hbd.report" in line
        for line in explain(_detail("failed"), crashed, None)
    )


def test_on_a_terminal_the_bar_runs_and_decisions_print_above_it() -> None:
    buf = io.StringIO()
    with SweepProgress("sw1", interactive=True, file=buf) as p:
        p.detail(_progress_detail(3, 0.5))
        p.event(
            Event(
                seq=1,
                type="sweep.early_stopped",
                sweep_id="sw1",
                trial_id=None,
                at=0,
                payload={"reason": "early stopping: the first 10 trial runs all failed"},
            )
        )
    assert "early stopping: the first 10 trial runs all failed" in buf.getvalue()
    assert "early stopping: early stopping" not in buf.getvalue()


def test_an_unreachable_daemon_suggests_reading_the_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "results", "sw1", "--url", "http://127.0.0.1:9")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: cannot reach the hbd daemon at http://127.0.0.1:9")
    assert err.rstrip().endswith("or read a database file with --db PATH")


def test_progress_says_when_a_sweep_waits_for_capacity() -> None:
    now = [0.0]
    buf = io.StringIO()
    starved = {
        "status": "running",
        "metric": {"name": "loss"},
        "planned_trial_runs": 22,
        "trials": {"scheduled": 5},
        "best": None,
    }
    with SweepProgress("sw1", interactive=False, file=buf, clock=lambda: now[0], interval=1e9) as p:
        p.detail(starved)
        now[0] = 9
        p.detail(starved)
        assert "waiting for capacity" not in buf.getvalue()
        now[0] = 10
        p.detail(starved)
        now[0] = 30
        p.detail(starved)  # said once
        assert buf.getvalue().count("waiting for capacity: 5 trial run(s) queued") == 1
        p.detail({**starved, "trials": {"scheduled": 4, "running": 1}})  # it moves again
        now[0] = 31
        p.detail(starved)
        now[0] = 42
        p.detail(starved)
    assert buf.getvalue().count("waiting for capacity") == 2
