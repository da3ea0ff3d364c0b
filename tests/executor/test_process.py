"""Argv templating, value formatting, durable files, report() (metrics tailing: test_metrics.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hbd.executor import results
from hbd.executor.process import (
    SupervisorHandle,
    TemplateError,
    describe_exit,
    format_value,
    render_argv,
)
from hbd.protocol import TrialStatus, TrialSubmission

from .helpers import REPO_ROOT

NASTY = ["; rm -rf /", "$(touch pwned)", "`id`", "a b  c", "'quoted'", '"dq"', "x && y | z", "*"]


def test_each_element_is_one_argv_element_and_reaches_the_program_literally(
    tmp_path: Path,
) -> None:
    out = tmp_path / "argv.json"
    command = [
        sys.executable,
        "-c",
        "import json, sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w'))",
        str(out),
        *[f"{{{{ p{i} }}}}" for i in range(len(NASTY))],
        "--lr={{lr}}",
        "--both={{ p0 }}/{{ p3 }}",
    ]
    params = {f"p{i}": value for i, value in enumerate(NASTY)} | {"lr": 0.001}
    argv = render_argv(command, params)
    subprocess.run(argv, cwd=tmp_path, check=True, timeout=30)
    received = json.loads(out.read_text())
    assert received == [str(out), *NASTY, "--lr=0.001", "--both=; rm -rf //a b  c"]
    assert not (tmp_path / "pwned").exists()


def test_unknown_placeholder_is_rejected_with_its_name() -> None:
    with pytest.raises(TemplateError, match="missing_one"):
        render_argv(["train", "--x={{ lr }}", "--y={{ missing_one }}"], {"lr": 1})


def test_dotted_names_and_whitespace() -> None:
    params = {"opt": {"lr": 0.1}, "a.b": "flat"}
    assert render_argv(["{{opt.lr}}", "{{   a.b   }}"], params) == ["0.1", "flat"]


def test_text_without_placeholders_is_untouched() -> None:
    assert render_argv(["{ lr }", "{{ 1x }}", "plain"], {}) == ["{ lr }", "{{ 1x }}", "plain"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (3, "3"),
        (0.001, "0.001"),
        (1e-05, "1e-05"),
        (0.1 + 0.2, "0.30000000000000004"),
        ("adam", "adam"),
        ([1, "a"], '[1,"a"]'),
    ],
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


def test_describe_exit() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == "killed by signal SIGKILL"


def test_results_round_trip_and_atomic_private_files(tmp_path: Path) -> None:
    sub = TrialSubmission.model_validate(
        {"id": "t1", "sweep_id": "s", "command": ["x"], "resource": {"name": "r", "value": 1}}
    )
    old_umask = os.umask(0)  # whatever the umask, the agent's files are private
    try:
        trial_directory = results.write_submission(tmp_path, sub)
        (stored,) = results.load_trials(tmp_path)
        assert stored.submission == sub and stored.result is None and not stored.taken
        status = TrialStatus(id="t1", sweep_id="s", state="succeeded", started_at=1.0, ended_at=2.0)
        results.write_result(tmp_path, status)
        results.mark_taken(tmp_path, "t1")
    finally:
        os.umask(old_umask)
    (stored,) = results.load_trials(tmp_path)
    assert stored.result == status and stored.taken
    directory = results.state_dir(tmp_path, "t1")
    assert sorted(p.name for p in directory.iterdir()) == [
        "result.json",
        "submission.json",
        "taken",
    ]
    assert trial_directory == results.trial_dir(tmp_path, "t1") and trial_directory.is_dir()
    for path in (directory, trial_directory, results.state_root(tmp_path)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # A corrupt result is treated as missing, a corrupt submission ignored.
    (directory / "result.json").write_text("{")
    assert results.load_trials(tmp_path)[0].result is None
    (directory / "submission.json").write_text("{")
    assert results.load_trials(tmp_path) == []
    results.remove_trial(tmp_path, "t1")
    assert not directory.exists() and not trial_directory.exists()


@pytest.mark.parametrize("bad", ["", "..", ".", "a/b", "a b", "x" * 201])
def test_trial_ids_that_are_not_safe_directory_names_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        TrialSubmission.model_validate(
            {"id": bad, "sweep_id": "s", "command": ["x"], "resource": {"name": "r", "value": 1}}
        )


def test_report_appends_json_lines(tmp_path: Path) -> None:
    metrics = tmp_path / "m.jsonl"
    code = "import hbd; hbd.report(loss=0.5, step=1); hbd.report(loss=float('nan'), acc=1)"
    env = {**os.environ, "HBD_METRICS_FILE": str(metrics), "PYTHONPATH": REPO_ROOT}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert lines == [{"loss": 0.5, "step": 1}, {"acc": 1}]
    assert "'loss' is nan" in done.stderr


def test_report_without_metrics_file_warns_once_and_import_is_light() -> None:
    code = (
        "import sys, hbd; hbd.report(loss=1); hbd.report(loss=2);"
        "heavy = {'pydantic', 'anyio', 'httpx', 'fastapi', 'structlog'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    env = {k: v for k, v in os.environ.items() if k != "HBD_METRICS_FILE"}
    env["PYTHONPATH"] = REPO_ROOT
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("HBD_METRICS_FILE is not set") == 1


def test_report_rejects_non_numbers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import hbd

    monkeypatch.setenv("HBD_METRICS_FILE", str(tmp_path / "m.jsonl"))
    with pytest.raises(TypeError):
        hbd.report(loss="low")  # type: ignore[arg-type]


def test_the_supervisor_imports_only_the_standard_library() -> None:
    # One supervisor starts per trial: the agent's imports would cost ~1 s each.
    code = (
        "import sys, hbd.executor.supervisor;"
        "heavy = {'pydantic', 'anyio', 'httpx', 'fastapi', 'structlog', 'hbd.executor.agent'}"
        " & set(sys.modules);"
        "assert not heavy, heavy"
    )
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


# A trial's end is on a sweep's critical path: the supervisor (waiting for its
# trial) and the agent (waiting for the supervisor) are woken by the exit
# itself, not by their next poll. The timeouts here are far longer than the
# test may take, so a wait that only ends by timing out fails it.
EXIT_WAIT_TIMEOUT = 60.0


def _quick_child() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])


def test_the_supervisor_wakes_when_its_trial_exits_not_at_its_next_poll() -> None:
    from hbd.executor import supervisor

    child = _quick_child()
    exit_fd = supervisor.exit_notifier(child.pid)
    assert exit_fd is not None  # Linux >= 5.3, as everywhere hbd runs
    try:
        started = time.monotonic()
        supervisor.wait_exit(exit_fd, EXIT_WAIT_TIMEOUT)
        assert time.monotonic() - started < EXIT_WAIT_TIMEOUT / 2
        assert child.wait(5) == 0
    finally:
        os.close(exit_fd)
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.anyio
async def test_the_agent_wakes_when_a_supervisor_exits_not_at_its_next_poll(
    tmp_path: Path,
) -> None:
    child = _quick_child()
    handle = SupervisorHandle(tmp_path, child)
    try:
        started = time.monotonic()
        await handle.exited_within(EXIT_WAIT_TIMEOUT)
        assert time.monotonic() - started < EXIT_WAIT_TIMEOUT / 2
        assert handle.finished()
        await handle.exited_within(0.01)  # after the exit (its pidfd closed): a plain sleep
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
