"""What a trial can do to the agent, and what the agent promises back (in-process agent, real trials).

Each test reproduces one reported fault: descendants that escape with
setsid, a flood of output, links planted where the agent writes, NUL bytes,
failures at every step of a start, a trial that never ends, and the agent
holding every finished trial forever.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import httpx
import pytest

from hbd.executor import agent as agent_module
from hbd.executor import process, results
from hbd.executor.agent import AgentLimits
from hbd.executor.process import pid_alive
from hbd.executor.supervisor import CappedLog
from hbd.protocol import TIMEOUT_REASON

from .helpers import running_agent, starts, submission, wait_for, wait_until

pytestmark = pytest.mark.anyio


def _kill_if_alive(pid: int) -> None:
    if pid and pid_alive(pid, None):
        os.kill(pid, 9)


# ------------------------------------------------------------ descendants (10.4)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["cancel", "end"])
async def test_a_double_forked_setsid_descendant_is_stopped(tmp_path: Path, how: str) -> None:
    pids = tmp_path / "grandchild.pid"
    seconds = "60" if how == "cancel" else "0"
    body = submission(tmp_path, "t1", "--mode=daemonize", f"--pids={pids}", f"--seconds={seconds}")
    grandchild = 0
    try:
        async with running_agent(tmp_path / "work") as client:
            assert (await client.post("/v1/trials", json=body)).status_code == 201
            await wait_until(pids.exists, timeout=20)
            grandchild, session = map(int, pids.read_text().split())
            assert session == grandchild  # it left the trial's session and process group
            if how == "cancel":
                status = (await client.post("/v1/trials/t1/cancel")).json()
                assert status["state"] == "cancelled"
            else:
                status = await wait_for(client, "t1")
                assert status["state"] == "succeeded", status
            await wait_until(lambda: not pid_alive(grandchild, None), timeout=10)
    finally:
        _kill_if_alive(grandchild)


# -------------------------------------------------------------- log caps (10.3)


def test_capped_log_keeps_head_and_tail_and_never_passes_its_cap(tmp_path: Path) -> None:
    cap = 4096
    written = bytearray()
    fd = os.open(tmp_path / "out.log", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        log = CappedLog(fd, cap)
        for i in range(3000):
            chunk = f"line {i:05d} ".encode() * (1 + i % 7)
            log.write(chunk)
            written += chunk
            assert os.fstat(fd).st_size <= cap
    finally:
        os.close(fd)
    data = (tmp_path / "out.log").read_bytes()
    head = data[: log.head]
    assert head == written[: log.head]
    marker_end = data.index(b"omitted]\n") + len(b"omitted]\n")
    omitted = int(data[log.head : marker_end].split(b";")[1].split()[0])
    tail = data[marker_end:]
    assert written.endswith(tail) and len(tail) >= log.tail
    assert log.head + omitted + len(tail) == len(written)


@pytest.mark.slow
async def test_a_trial_flooding_stdout_is_capped_head_and_tail(tmp_path: Path) -> None:
    cap = 64 * 1024
    body = submission(tmp_path, "t1", "--mode=flood", "--mb=24")
    async with running_agent(tmp_path / "work", limits=AgentLimits(log_cap_bytes=cap)) as client:
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        status = await wait_for(client, "t1", timeout=60)
    assert status["state"] == "succeeded", status
    stdout = tmp_path / "work/trials/t1/stdout.log"
    data = stdout.read_bytes()
    assert len(data) <= cap
    assert data.startswith(b"FIRST LINE\n")
    assert data.endswith(b"LAST LINE\n")
    assert b"bytes omitted]" in data
    assert (tmp_path / "work/trials/t1/stderr.log").read_bytes() == b"ERR TAIL\n"


def test_log_cap_has_a_floor() -> None:
    with pytest.raises(ValueError, match="log_cap_bytes"):
        AgentLimits(log_cap_bytes=10)


# ----------------------------------------------------------- planted links (10.5)

# Every name the agent or the supervisor writes, with the temp names of atomic writes.
AGENT_FILES = [
    "submission.json",
    "launch.json",
    "result.json",
    "exit.json",
    "started",
    "child",
    "stop",
    "taken",
    "pid",
    "stdout.log",
    "stderr.log",
]


async def test_links_planted_where_the_agent_writes_are_never_followed(tmp_path: Path) -> None:
    work = (tmp_path / "work").resolve()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    names = AGENT_FILES + [f".{n}.tmp" for n in AGENT_FILES]
    # The trial plants links in its own directory and, as a hostile trial of
    # the same user could, in its state directory, for every file name.
    planter = (
        "import os, sys, time\n"
        "d = os.environ['HBD_TRIAL_DIR']\n"
        f"names = {names!r}\n"
        "state = os.path.join(os.path.dirname(os.path.dirname(d)), 'state', os.path.basename(d))\n"
        "for where in (d, state):\n"
        "    for n in names:\n"
        "        p = os.path.join(where, n)\n"
        "        if not os.path.lexists(p):\n"
        f"            os.symlink({str(victim)!r}, p)\n"
        "open(os.environ['HBD_METRICS_FILE'], 'a').write('{\"loss\": 0.5}\\n')\n"
    )
    body = submission(tmp_path, "t1") | {"command": [sys.executable, "-c", planter]}
    # Links planted before the trial even starts (a stale directory) are not followed either.
    (work / "trials/t1").mkdir(parents=True)
    for name in ("stdout.log", "stderr.log", ".result.json.tmp"):
        (work / "trials/t1" / name).symlink_to(victim)
    async with running_agent(work) as client:
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        status = await wait_for(client, "t1")
        assert status["state"] == "succeeded", status
        assert (await client.post("/v1/trials/t1/cancel")).json()["state"] == "succeeded"
        await client.get("/v1/trials/t1")
    assert victim.read_text() == "precious"
    result = work / "state/t1/result.json"
    assert not result.is_symlink() and json.loads(result.read_text())["state"] == "succeeded"
    assert not (work / "trials/t1/stdout.log").is_symlink()
    async with running_agent(work) as client:  # what is on disk still reads back
        assert (await client.get("/v1/trials/t1")).json()["state"] == "succeeded"
    assert victim.read_text() == "precious"


# ------------------------------------------------------ NUL bytes, slots (10.6)


@pytest.mark.parametrize(
    "change",
    [
        {"command": [sys.executable, "-c", "pass\x00"]},
        {"params": {"lr": "0.1\x00"}, "command": [sys.executable, "-c", "pass", "{{ lr }}"]},
        {"params": {"nested": {"k\x00": 1}}},
        {"env": {"X": "a\x00b"}},
        {"sweep_id": "s\x00"},
    ],
    ids=["command", "param", "param-key", "env", "sweep_id"],
)
async def test_a_nul_byte_is_refused_with_422_and_the_slot_stays_free(
    tmp_path: Path, change: dict[str, object]
) -> None:
    async with running_agent(tmp_path / "work", slots=1) as client:
        response = await client.post("/v1/trials", json=submission(tmp_path, "bad") | change)
        assert response.status_code == 422, response.text
        assert "NUL" in response.text or "not valid" in response.text
        health = (await client.get("/v1/health")).json()
        assert health["free_slots"] == 1 and health["running"] == []
        assert (await client.get("/v1/trials/bad")).status_code == 404
        ok = await client.post("/v1/trials", json=submission(tmp_path, "good", "--mode=ok"))
        assert ok.status_code == 201
        assert (await wait_for(client, "good"))["state"] == "succeeded"


def _fail(*args: object, **kwargs: object) -> None:
    raise OSError(28, "No space left on device (injected)")


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("injected bug")


STEPS = [
    ("write_submission", results, "write_submission"),
    ("make_private_dir", results, "make_private_dir"),
    ("write_state_file", results, "write_state_file"),
    ("try_lock", process, "try_lock"),
    ("start_supervisor", process, "start_supervisor"),
]


@pytest.mark.parametrize("fault", [_fail, _boom], ids=["oserror", "bug"])
@pytest.mark.parametrize(("name", "module", "attr"), STEPS, ids=[s[0] for s in STEPS])
async def test_a_failure_at_any_step_of_a_start_leaves_no_slot_taken(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    module: object,
    attr: str,
    fault: object,
) -> None:
    work = tmp_path / "work"
    async with running_agent(work, slots=1) as client:
        with monkeypatch.context() as patch:
            patch.setattr(module, attr, fault)
            response = await client.post("/v1/trials", json=submission(tmp_path, "t1"))
        expected = 503 if fault is _fail else 500
        assert response.status_code == expected, (name, response.text)
        health = (await client.get("/v1/health")).json()
        assert health["free_slots"] == 1 and health["running"] == [], name
        assert (await client.get("/v1/trials/t1")).status_code == 404
        assert not (work / "state/t1").exists()
        # The same id starts normally once the fault is gone, and runs once.
        assert (await client.post("/v1/trials", json=submission(tmp_path, "t1"))).status_code == 201
        assert (await wait_for(client, "t1"))["state"] == "succeeded"
    assert starts(tmp_path, "t1") == 1


# --------------------------------------------------------------- timeout (11.6)


@pytest.mark.slow
async def test_a_trial_past_its_timeout_is_stopped_and_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_module, "CANCEL_GRACE_SECONDS", 0.5)
    stubborn = (
        "import signal, time, hbd; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "hbd.report(loss=0.3); time.sleep(60)"
    )
    body = submission(tmp_path, "t1", timeout_seconds=1.0) | {
        "command": [sys.executable, "-c", stubborn]
    }
    quick = submission(tmp_path, "t2", "--mode=ok", timeout_seconds=30.0)
    started = time.monotonic()
    async with running_agent(tmp_path / "work") as client:
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        assert (await client.post("/v1/trials", json=quick)).status_code == 201
        status = await wait_for(client, "t1", timeout=30)
        other = await wait_for(client, "t2", timeout=30)
    assert status["state"] == "failed" and status["reason"] == TIMEOUT_REASON
    assert status["exit_code"] == -9  # it ignored SIGTERM: killed after the grace
    assert status["metrics"] == {"loss": 0.3}
    assert time.monotonic() - started < 20
    assert other["state"] == "succeeded"


# ------------------------------------------------------------ retention (9.8)


async def test_finished_trials_are_forgotten_after_retention_once_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_module, "RETENTION_SWEEP_INTERVAL", 0.1)
    work = tmp_path / "work"
    limits = AgentLimits(retain_seconds=0.5, retain_trials=100)
    async with running_agent(work, limits=limits) as client:
        for trial_id in ("taken", "untaken"):
            body = submission(tmp_path, trial_id, "--mode=ok")
            assert (await client.post("/v1/trials", json=body)).status_code == 201
        await wait_for(client, "taken")  # a GET that serves the finished status takes it
        await wait_until(lambda: (work / "state/untaken/result.json").exists())

        async def gone() -> bool:
            return (await client.get("/v1/trials/taken")).status_code == 404

        deadline = time.monotonic() + 10
        while not await gone():
            assert time.monotonic() < deadline, "a taken trial past retention was kept"
            await _sleep(0.1)
        assert not (work / "state/taken").exists() and not (work / "trials/taken").exists()
        # Never taken: kept (the daemon has not got its result yet), though it
        # ended as long ago as the one that was forgotten.
        assert (work / "state/untaken/result.json").exists()
        listed = [s["id"] for s in (await client.get("/v1/trials")).json()]
        assert listed == ["untaken"]  # (this listing takes it)


@pytest.mark.slow
async def test_the_count_cap_forgets_the_oldest_finished_trials(tmp_path: Path) -> None:
    work = tmp_path / "work"
    limits = AgentLimits(retain_seconds=3600, retain_trials=2)
    async with running_agent(work, limits=limits, slots=4) as client:
        for i in range(4):
            body = submission(tmp_path, f"t{i}", "--mode=ok")
            assert (await client.post("/v1/trials", json=body)).status_code == 201
            await wait_for(client, f"t{i}")
    # The cap is applied when the next agent loads the workdir (and every sweep).
    async with running_agent(work, limits=limits) as client:
        listed = [s["id"] for s in (await client.get("/v1/trials")).json()]
        assert listed == ["t2", "t3"]
        assert sorted(p.name for p in (work / "state").iterdir()) == ["t2", "t3"]
        # Within retention a repeat is answered, never run again.
        again = await client.post("/v1/trials", json=submission(tmp_path, "t3", "--mode=ok"))
        assert again.status_code == 200
    assert starts(tmp_path, "t3") == 1


async def test_a_trial_submitted_while_retention_records_a_taken_result_is_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention awaits a disk write per newly taken trial; a submission in between
    used to change the trial table under its loop, and the RuntimeError stopped the
    whole agent (every running trial failed, every daemon then waited forever)."""
    import threading

    monkeypatch.setattr(agent_module, "RETENTION_SWEEP_INTERVAL", 0.05)
    entered, release = threading.Event(), threading.Event()
    real_mark_taken = results.mark_taken

    def slow_mark_taken(workdir: Path, trial_id: str) -> None:
        entered.set()
        release.wait(10)
        real_mark_taken(workdir, trial_id)

    monkeypatch.setattr(results, "mark_taken", slow_mark_taken)
    work = tmp_path / "work"
    async with running_agent(work, slots=2) as client:
        assert (await client.post("/v1/trials", json=submission(tmp_path, "t1"))).status_code == 201
        await wait_for(client, "t1")  # served finished: taken, recorded by the next sweep
        await wait_until(entered.is_set)  # retention is inside its loop over the trials
        assert (await client.post("/v1/trials", json=submission(tmp_path, "t2"))).status_code == 201
        release.set()
        assert (await wait_for(client, "t2"))["state"] == "succeeded"
        assert (await client.get("/v1/health")).status_code == 200
    assert (work / "state/t1/taken").exists()
    assert starts(tmp_path, "t2") == 1


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


# ------------------------------------------------- permissions and token (10.14)


async def test_workdir_and_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    work = tmp_path / "work"
    old = os.umask(0o000)
    try:
        async with running_agent(work) as client:
            body = submission(tmp_path, "t1", "--mode=ok")
            assert (await client.post("/v1/trials", json=body)).status_code == 201
            await wait_for(client, "t1")
    finally:
        os.umask(old)
    for path in [work, work / "state", work / "trials", work / "trials/t1", work / "state/t1"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    files = [
        *(work / "state/t1").iterdir(),
        work / "trials/t1/stdout.log",
        work / "trials/t1/stderr.log",
    ]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((work / "checkpoints/t1").stat().st_mode) == 0o700


async def test_the_token_is_checked_before_the_body_is_read(tmp_path: Path) -> None:
    async with running_agent(tmp_path / "work", token="s3cret-token-0123456789") as client:
        anonymous = httpx.AsyncClient(base_url=client.base_url)
        async with anonymous:
            broken = await anonymous.post(
                "/v1/trials", content=b"{not json", headers={"content-type": "application/json"}
            )
            assert broken.status_code == 401
            huge = await anonymous.post("/v1/trials", content=b"x" * (2 * 1024 * 1024))
            assert huge.status_code == 401
        assert (await client.post("/v1/trials", content=b"{not json")).status_code == 422


# ---------------------------------------------------------------- upgrade


@pytest.mark.slow
async def test_trials_recorded_by_an_older_agent_are_imported_never_rerun(tmp_path: Path) -> None:
    import subprocess

    from hbd.protocol import TrialStatus, TrialSubmission

    work = (tmp_path / "work").resolve()
    done_body = submission(tmp_path, "old-done", "--mode=ok")
    running_body = submission(tmp_path, "old-running", "--mode=ok")
    for body in (done_body, running_body):
        legacy = work / "trials" / body["id"]
        legacy.mkdir(parents=True)
        sub = TrialSubmission.model_validate(body)
        (legacy / "submission.json").write_text(sub.model_dump_json())
    finished = TrialStatus(
        id="old-done", sweep_id="sweep-1", state="succeeded", started_at=1.0, ended_at=2.0
    )
    (work / "trials/old-done/result.json").write_text(finished.model_dump_json())
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        start_time = process.process_start_time(sleeper.pid)
        pid_record = {"pid": sleeper.pid, "start_time": start_time}
        (work / "trials/old-running/pid").write_text(json.dumps(pid_record))
        async with running_agent(work) as client:
            assert (await client.get("/v1/trials/old-done")).json() == finished.model_dump(
                mode="json"
            )
            again = await client.post("/v1/trials", json=done_body)
            assert again.status_code == 200
            lost = (await client.get("/v1/trials/old-running")).json()
            assert lost["state"] == "failed"
            assert lost["reason"] == agent_module.RESTART_REASON
        assert sleeper.wait(10) == -9  # the older agent's trial was stopped, not left unaccounted
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    assert starts(tmp_path, "old-done") == 0


# ------------------------------------------------------- the supervisor itself


def _parent_of(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])


async def test_a_killed_supervisor_fails_its_trial_and_stops_it(tmp_path: Path) -> None:
    work = (tmp_path / "work").resolve()
    body = submission(tmp_path, "t1", "--mode=sleep", "--seconds=60")
    leader = 0
    try:
        async with running_agent(work) as client:
            assert (await client.post("/v1/trials", json=body)).status_code == 201
            await wait_for(client, "t1", finished=False)
            child = results.read_child(work, "t1")
            assert child is not None
            leader = child[0]
            os.kill(_parent_of(leader), 9)  # the supervisor, not the trial
            status = await wait_for(client, "t1")
            assert status["state"] == "failed"
            assert status["reason"] == agent_module.SUPERVISOR_LOST_REASON
            await wait_until(lambda: not pid_alive(leader, None))
    finally:
        _kill_if_alive(leader)
    assert starts(tmp_path, "t1") == 1


def test_a_supervisor_never_starts_a_trial_twice(tmp_path: Path) -> None:
    import subprocess

    from hbd.executor import supervisor

    state = tmp_path / "state"
    state.mkdir()
    marker = tmp_path / "ran"
    launch = {
        "argv": [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x')"],
        "env": {},
        "cwd": str(tmp_path),
        "trial_dir": str(tmp_path),
        "log_cap_bytes": 4096,
        "grace_seconds": 1,
        "timeout_seconds": None,
    }
    (state / supervisor.LAUNCH_FILE).write_text(json.dumps(launch))

    def run() -> int:
        fd = process.try_lock(state)
        assert fd is not None
        try:
            return subprocess.run(
                [sys.executable, "-m", "hbd.executor.supervisor", str(state), str(fd)],
                pass_fds=(fd,),
                timeout=30,
                check=False,
            ).returncode
        finally:
            os.close(fd)

    assert run() == 0
    record = json.loads((state / supervisor.EXIT_FILE).read_text())
    assert record["returncode"] == 0 and record["stopped"] is None
    assert marker.read_text() == "x"
    assert run() == 1  # started (and ended) once already: refused
    assert marker.read_text() == "x"


@pytest.mark.slow
async def test_a_failure_while_concluding_a_trial_frees_its_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "read_exit", _boom)
    async with running_agent(tmp_path / "work", slots=1) as client:
        assert (await client.post("/v1/trials", json=submission(tmp_path, "t1"))).status_code == 201
        status = await wait_for(client, "t1")
        assert status["state"] == "failed" and "injected bug" in status["reason"]
        health = (await client.get("/v1/health")).json()
        assert health["free_slots"] == 1 and health["running"] == []


async def test_a_delivered_final_callback_counts_as_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_module, "RETENTION_SWEEP_INTERVAL", 0.1)
    work = tmp_path / "work"
    delivered: list[str] = []

    async def daemon(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["kind"] == "status":
            delivered.append(body["trial_id"])
        return httpx.Response(204)

    limits = AgentLimits(retain_seconds=0.3)
    body = submission(tmp_path, "t1", "--mode=ok", callback_url="http://daemon.test/cb")
    async with running_agent(work, limits=limits, transport=httpx.MockTransport(daemon)) as client:
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        await wait_until(lambda: delivered == ["t1"], timeout=30)  # no GET of it ever
        await wait_until(lambda: not (work / "state/t1").exists(), timeout=10)
        deadline = time.monotonic() + 10
        while (await client.get("/v1/trials/t1")).status_code != 404:  # memory follows disk
            assert time.monotonic() < deadline
            await _sleep(0.05)
        assert not (work / "trials/t1").exists()


async def test_a_cancel_that_arrives_while_the_trial_is_starting_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    real = process.start_supervisor
    entered = []

    def slow_start(state: Path, lock_fd: int) -> object:
        entered.append(True)
        time.sleep(1.0)  # (worker thread) the cancel arrives meanwhile
        return real(state, lock_fd)

    monkeypatch.setattr(process, "start_supervisor", slow_start)
    body = submission(tmp_path, "t1", "--mode=sleep", "--seconds=60")
    async with running_agent(tmp_path / "work", slots=1) as client:
        async with anyio.create_task_group() as tg:
            posted: list[httpx.Response] = []

            async def post() -> None:
                posted.append(await client.post("/v1/trials", json=body))

            tg.start_soon(post)
            await wait_until(lambda: bool(entered))
            cancelled = await client.post("/v1/trials/t1/cancel")
        assert posted[0].status_code == 201
        assert cancelled.json()["state"] == "cancelled", cancelled.json()
        health = (await client.get("/v1/health")).json()
        assert health["free_slots"] == 1
    child = results.read_child((tmp_path / "work").resolve(), "t1")
    if child is not None:  # it may have started before it saw the stop: then it is gone
        assert not pid_alive(*child)


async def test_the_same_trial_posted_five_times_at_once_runs_once(tmp_path: Path) -> None:
    import anyio

    body = submission(tmp_path, "t1", "--mode=ok")
    codes: list[int] = []
    async with running_agent(tmp_path / "work", slots=1) as client:

        async def post() -> None:
            codes.append((await client.post("/v1/trials", json=body)).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(post)
        assert sorted(codes) == [200, 200, 200, 200, 201]
        assert (await wait_for(client, "t1"))["state"] == "succeeded"
    assert starts(tmp_path, "t1") == 1
