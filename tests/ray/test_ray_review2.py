"""Review: what a trial or an operator can do to the Ray path, without a cluster.

The job log is produced by the real runner's Reporter and read back by the
real RayBackend through httpx MockTransport at the HTTP seam.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hbd.daemon.ray_backend import RayBackend, job_name
from hbd.errors import ExecutorError
from hbd.executor import ray_runner
from hbd.executor.metrics import Line
from hbd.protocol import TrialStatus, TrialSubmission
from tests.ray.test_ray_units import sub as units_sub

pytestmark = pytest.mark.anyio


def sub(**kw: object) -> TrialSubmission:
    return units_sub(**{"metric": "loss", **kw})


def cluster(log_text: str, trial: TrialSubmission) -> httpx.MockTransport:
    name = job_name(trial.id, trial.run)
    info = {
        "submission_id": name,
        "status": "SUCCEEDED",  # the runner exits 0 whatever the trial did
        "metadata": {"hbd_trial_id": trial.id, "hbd_run": str(trial.run), "hbd_sweep_id": "s"},
        "start_time": 1000,
        "end_time": 2000,
    }

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/jobs/":
            return httpx.Response(200, json=[info])
        if path == f"/api/jobs/{name}":
            return httpx.Response(200, json=info)
        if path == f"/api/jobs/{name}/logs":
            return httpx.Response(200, json={"logs": log_text})
        return httpx.Response(404, text="no such job")

    return httpx.MockTransport(handle)


SEPARATORS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c"]


async def read_back(trial: TrialSubmission, log_text: str) -> TrialStatus:
    backend = RayBackend("ray://127.0.0.1:8265", transport=cluster(log_text, trial))
    try:
        return await backend.status(trial.id)
    finally:
        await backend.aclose()


@pytest.mark.parametrize("separator", SEPARATORS)
async def test_a_failed_trials_stderr_does_not_lose_or_forge_its_verdict(
    capsys: pytest.CaptureFixture[str], separator: str
) -> None:
    # Bug: the backend split the job log with str.splitlines(), which also
    # splits on U+2028, NEL, VT, FF...; the runner's @hbd-status line is
    # pydantic JSON, which leaves those raw. A failed trial's stderr tail
    # (part of that line) cut it: the verdict was lost, and the job (exit 0)
    # reported as "Ray job ... ended SUCCEEDED" without reason, exit code or
    # metrics. Quotes stay escaped, so a whole forged status cannot be made.
    trial = sub()
    forged = TrialStatus(
        id="t1", sweep_id="s", run=1, state="succeeded", metrics={"loss": -1e9}, started_at=1.0
    ).model_dump_json()
    stderr = f"Traceback...{separator}{ray_runner.STATUS_PREFIX}{forged}{separator}end"
    real = TrialStatus(
        id="t1",
        sweep_id="s",
        run=1,
        state="failed",
        metrics={"loss": 3.0},
        reason="exit code 1",
        exit_code=1,
        stderr_tail=stderr,
        started_at=1.0,
        ended_at=2.0,
    )
    reporter = ray_runner.Reporter(trial, None)
    reporter.status(real)
    reporter.close()
    status = await read_back(trial, capsys.readouterr().out)
    assert status == real


@pytest.mark.parametrize("separator", SEPARATORS)
async def test_a_succeeded_trial_with_an_odd_metric_name_stays_succeeded(
    capsys: pytest.CaptureFixture[str], separator: str
) -> None:
    trial = sub()
    metrics = {"loss": 0.5, f"lr{separator}note": 1.0}
    real = TrialStatus(
        id="t1",
        sweep_id="s",
        run=1,
        state="succeeded",
        metrics=metrics,
        metrics_seq=1,
        started_at=1.0,
        ended_at=2.0,
    )
    reporter = ray_runner.Reporter(trial, None)

    reporter.lines([Line(seq=1, metrics=metrics)])
    reporter.status(real)
    reporter.close()
    status = await read_back(trial, capsys.readouterr().out)
    assert status.state == "succeeded", status.reason
    assert status.metrics == metrics


# ---- the checkpoint contract on a Ray node (the runner as a real process)

WRITE_AND_RESUME = (
    'test -n "$HBD_RESUME_FROM" && cat "$HBD_RESUME_FROM/w.txt" > "$HBD_TRIAL_DIR/resumed.txt"; '
    'echo "$HBD_TRIAL_ID" > "$HBD_CHECKPOINT_DIR/w.txt"; '
    'echo \'{"loss": 1.0}\' >> "$HBD_METRICS_FILE"'
)


def run_on_node(trial: TrialSubmission, node: Path) -> TrialStatus:
    """``python -m hbd.executor.ray_runner`` as Ray starts it: a real process."""
    env = {
        **os.environ,
        ray_runner.SUBMISSION_ENV: trial.model_dump_json(),
        ray_runner.WORKDIR_ENV: str(node),
    }
    done = subprocess.run(
        [sys.executable, "-m", "hbd.executor.ray_runner"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    last = [x for x in done.stdout.split("\n") if x.startswith(ray_runner.STATUS_PREFIX)][-1]
    return TrialStatus.model_validate_json(last.removeprefix(ray_runner.STATUS_PREFIX))


@pytest.mark.parametrize("kind", ["path", "url"])
def test_a_ray_trial_writes_and_resumes_through_the_daemons_checkpoint_store(
    tmp_path: Path, kind: str
) -> None:
    # Bug: the runner ignored the submission's checkpoint_store (the daemon's
    # `checkpoints` setting) and always used <node workdir>/checkpoints: with a
    # shared path or a URL the checkpoint was never where retention and a
    # resumed child (maybe on another node) look for it.
    shared = tmp_path / "shared"
    shared.mkdir()
    store = str(shared) if kind == "path" else f"file://{shared}"
    command = ["sh", "-c", WRITE_AND_RESUME]
    parent = sub(id="p1", command=command, checkpoint_store=store)
    assert run_on_node(parent, tmp_path / "node-a").state == "succeeded"
    assert (shared / "p1" / "w.txt").read_text() == "p1\n"
    child = sub(id="c1", command=command, checkpoint_store=store, resume_from="p1")
    assert run_on_node(child, tmp_path / "node-b").state == "succeeded"
    assert (tmp_path / "node-b" / "trials" / "c1" / "resumed.txt").read_text() == "p1\n"
    assert (shared / "c1" / "w.txt").read_text() == "c1\n"


async def test_a_restarted_daemon_does_not_take_a_foreign_jobs_word_for_a_trial() -> None:
    # Bug: a restarted daemon found a trial's job by metadata alone, taking the
    # highest hbd_run among jobs naming the trial: any job on the cluster (a
    # second hbd, a user's own job) with {"hbd_trial_id": "t1", "hbd_run": "99"}
    # and an @hbd-status line in its log decided the trial's verdict.
    trial = sub()
    ours = job_name("t1", 1)
    forged = TrialStatus(
        id="t1", sweep_id="s", run=99, state="succeeded", metrics={"loss": -1e9}, started_at=1.0
    )
    jobs = {
        ours: {
            "submission_id": ours,
            "status": "RUNNING",
            "metadata": {"hbd_trial_id": "t1", "hbd_run": "1", "hbd_sweep_id": "s"},
            "start_time": 1000,
        },
        "raysubmit_evil": {
            "submission_id": "raysubmit_evil",
            "status": "SUCCEEDED",
            "metadata": {"hbd_trial_id": "t1", "hbd_run": "99", "hbd_sweep_id": "s"},
            "start_time": 1000,
            "end_time": 2000,
        },
    }
    logs = {ours: "", "raysubmit_evil": f"{ray_runner.STATUS_PREFIX}{forged.model_dump_json()}\n"}

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/jobs/":
            return httpx.Response(200, json=list(jobs.values()))
        for name, info in jobs.items():
            if path == f"/api/jobs/{name}":
                return httpx.Response(200, json=info)
            if path == f"/api/jobs/{name}/logs":
                return httpx.Response(200, json={"logs": logs[name]})
        return httpx.Response(404, text="no such job")

    backend = RayBackend("ray://127.0.0.1:8265", transport=httpx.MockTransport(handle))
    try:
        status = await backend.status(trial.id)
    finally:
        await backend.aclose()
    assert (status.state, status.run, status.metrics) == ("running", 1, {})


def answering(info: object, listing: object = None) -> httpx.MockTransport:
    name = job_name("t1", 1)

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/jobs/" and request.method == "GET":
            return httpx.Response(200, json=listing if listing is not None else [info])
        if path == f"/api/jobs/{name}":
            return httpx.Response(200, json=info)
        if path == f"/api/jobs/{name}/logs":
            return httpx.Response(200, json={"logs": ""})
        return httpx.Response(404, text="no such job")

    return httpx.MockTransport(handle)


OURS = {"hbd_trial_id": "t1", "hbd_run": "1", "hbd_sweep_id": "s"}


@pytest.mark.parametrize(
    "info",
    [
        [],
        "RUNNING",
        {"status": "RUNNING", "metadata": ["hbd_trial_id"]},
        {"status": "RUNNING", "metadata": {**OURS, "hbd_run": "x"}},
        {"status": "RUNNING", "metadata": {**OURS, "hbd_run": ["1"]}},
        {"status": "FAILED", "metadata": OURS, "start_time": "soon", "end_time": "later"},
        {"status": "FAILED", "metadata": OURS, "driver_exit_code": "boom", "message": [1]},
        {"status": "FAILED", "metadata": OURS, "start_time": 10**400, "end_time": 10**400},
    ],
)
async def test_a_malformed_job_answer_is_an_executor_error_not_a_crash(info: object) -> None:
    # Bug: the backend read Ray's job answers as well-formed dicts: a list,
    # metadata that is not a dict, a run that is not a number, times that are
    # strings raised AttributeError/ValueError/TypeError out of submit and
    # status, which the daemon's dispatcher and resume do not expect (they
    # handle ExecutorError): one odd answer from a cluster could stop them.
    listing = [{"submission_id": job_name("t1", 1), "metadata": OURS}]
    for call in ("submit", "status"):
        backend = RayBackend("ray://127.0.0.1:8265", transport=answering(info, listing))
        try:
            if call == "submit":
                await backend.submit(sub())
            else:
                status = await backend.status("t1")
                # What it answers is a valid status (model_copy does not validate).
                assert TrialStatus.model_validate(status.model_dump()) == status
        except ExecutorError:
            pass
        finally:
            await backend.aclose()
