"""GPU devices per trial: real agent, real trial processes, fake device ids (--gpus 0,1)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from hbd import gpus
from hbd.core.component import Resources
from hbd.executor import process, results
from hbd.executor.agent import GPUS_FILE
from hbd.protocol import TrialSubmission
from hbd.settings import ExecutorSettings

from .helpers import running_agent, submission, wait_for

pytestmark = pytest.mark.anyio


def _gpu_trial(tmp_path: Path, trial_id: str, count: int | None, *, mode: str = "sleep") -> Any:
    extra: dict[str, Any] = {}
    if count is not None:
        extra["resources"] = {"limits": {"nvidia.com/gpu": str(count)}}
    dump = tmp_path / f"{trial_id}.env.json"
    return submission(
        tmp_path, trial_id, f"--mode={mode}", "--seconds=60", f"--dump={dump}", **extra
    )


async def _env_of(tmp_path: Path, trial_id: str, timeout: float = 20.0) -> dict[str, str]:
    """The environment the trial saw (it dumps it first thing)."""
    path = tmp_path / f"{trial_id}.env.json"
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().endswith("}"):
        if time.monotonic() > deadline:
            raise AssertionError(f"trial {trial_id} never dumped its environment")
        await anyio.sleep(0.05)
    env: dict[str, str] = json.loads(path.read_text())["env"]
    return env


async def _health(client: httpx.AsyncClient) -> dict[str, Any]:
    health: dict[str, Any] = (await client.get("/v1/health")).json()
    return health


# ---------------------------------------------------------------- pure pieces


def test_gpu_lists_parse_and_bad_ones_are_named() -> None:
    assert gpus.parse("0,1, 2") == ("0", "1", "2")
    assert gpus.parse("none") == ()
    assert gpus.parse("auto") is None
    assert gpus.parse("GPU-8a1b2c3d-0000-1111-2222-333344445555") == (
        "GPU-8a1b2c3d-0000-1111-2222-333344445555",
    )
    with pytest.raises(ValueError, match="named twice"):
        gpus.parse("0,1,0")
    for bad in ("0,,1", "0;rm -rf", "../0", "x" * 101):
        with pytest.raises(ValueError, match="not a GPU device id"):
            gpus.parse(bad)
    with pytest.raises(ValueError, match="MAX_HOST_GPUS"):
        gpus.parse(",".join(str(i) for i in range(gpus.MAX_HOST_GPUS + 1)))


def test_picking_takes_free_devices_in_order_or_none() -> None:
    assert gpus.pick(("0", "1", "2"), {"0"}, 2) == ("1", "2")
    assert gpus.pick(("0", "1", "2"), {"0", "2"}, 2) is None
    assert gpus.pick(("0",), set(), 0) == ()


def test_without_nvml_the_host_has_no_gpus() -> None:
    # nvidia-ml-py is not installed in the test environment (or no driver): none.
    assert gpus.resolve("auto") == gpus.detect() == ()
    assert gpus.resolve("3,4") == ("3", "4")


def test_the_settings_check_the_gpu_list() -> None:
    assert ExecutorSettings(gpus=[0, 1]).gpus == "0,1"
    with pytest.raises(Exception, match="named twice"):
        ExecutorSettings(gpus="1,1")


def test_a_spec_asking_part_of_a_gpu_is_refused_at_validation() -> None:
    with pytest.raises(ValueError, match=r"nvidia.com/gpu: '0.5' is not a whole number"):
        Resources(limits={"nvidia.com/gpu": "0.5"})
    with pytest.raises(ValueError, match="not a whole number"):
        Resources(requests={"nvidia.com/gpu": "500m"})
    assert Resources(limits={"nvidia.com/gpu": 2}).limits == {"nvidia.com/gpu": "2"}


def test_an_old_submission_without_resources_asks_for_no_gpu() -> None:
    sub = TrialSubmission.model_validate(
        {"id": "t", "sweep_id": "s", "command": ["x"], "resource": {"name": "n", "value": 1}}
    )
    assert sub.resources is None


# ---------------------------------------------------------------- the agent


@pytest.mark.slow
async def test_trials_get_disjoint_devices_a_third_waits_and_gets_the_freed_one(
    tmp_path: Path,
) -> None:
    async with running_agent(tmp_path / "work", slots=4, gpus=("0", "1")) as client:
        health = await _health(client)
        assert health["gpus"] == ["0", "1"] and health["free_gpus"] == ["0", "1"]
        for trial_id in ("a", "b"):
            response = await client.post("/v1/trials", json=_gpu_trial(tmp_path, trial_id, 1))
            assert response.status_code == 201, response.text
        seen = {t: (await _env_of(tmp_path, t))["CUDA_VISIBLE_DEVICES"] for t in ("a", "b")}
        assert sorted(seen.values()) == ["0", "1"]
        assert (await _env_of(tmp_path, "a"))["HBD_GPUS"] == seen["a"]
        assert (await _health(client))["free_gpus"] == []

        # A slot is free but no device: the third waits, told why, and nothing runs.
        third = _gpu_trial(tmp_path, "c", 1)
        busy = await client.post("/v1/trials", json=third)
        assert busy.status_code == 429, busy.text
        assert "no free GPU" in busy.json()["detail"] and busy.headers["Retry-After"]
        assert (await client.get("/v1/trials/c")).status_code == 404

        # A trial asking none still runs, and sees no device at all.
        none = await client.post("/v1/trials", json=_gpu_trial(tmp_path, "cpu", None))
        assert none.status_code == 201, none.text
        assert (await _env_of(tmp_path, "cpu"))["CUDA_VISIBLE_DEVICES"] == ""

        await client.post("/v1/trials/a/cancel")
        await wait_for(client, "a")
        assert (await _health(client))["free_gpus"] == [seen["a"]]
        response = await client.post("/v1/trials", json=third)
        assert response.status_code == 201, response.text
        assert (await _env_of(tmp_path, "c"))["CUDA_VISIBLE_DEVICES"] == seen["a"]
        for trial_id in ("b", "c", "cpu"):
            await client.post(f"/v1/trials/{trial_id}/cancel")


async def test_a_trial_asking_more_gpus_than_the_host_has_is_refused_with_422(
    tmp_path: Path,
) -> None:
    async with running_agent(tmp_path / "work", gpus=("0", "1")) as client:
        response = await client.post("/v1/trials", json=_gpu_trial(tmp_path, "big", 3))
        assert response.status_code == 422, response.text
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "resources"]
        assert "asks for 3 GPU(s)" in detail["msg"] and "has 2" in detail["msg"]
        assert (await _health(client))["free_slots"] == 2
    async with running_agent(tmp_path / "work2") as client:  # a host without GPUs
        response = await client.post("/v1/trials", json=_gpu_trial(tmp_path, "one", 1))
        assert response.status_code == 422 and "has 0" in response.text


async def test_on_a_host_without_gpus_trials_keep_the_inherited_environment(
    tmp_path: Path,
) -> None:
    async with running_agent(tmp_path / "work") as client:
        body = _gpu_trial(tmp_path, "plain", None, mode="ok")
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        env = await _env_of(tmp_path, "plain")
        assert "HBD_GPUS" not in env
        assert (await _health(client))["gpus"] == []
        await wait_for(client, "plain")


@pytest.mark.slow
async def test_an_agent_restart_keeps_the_devices_of_the_trials_it_adopts(
    tmp_path: Path,
) -> None:
    work = (tmp_path / "work").resolve()
    async with running_agent(work, keep_trials_on_exit=True, gpus=("0", "1")) as client:
        assert (
            await client.post("/v1/trials", json=_gpu_trial(tmp_path, "kept", 1))
        ).status_code == 201
        held = (await _env_of(tmp_path, "kept"))["CUDA_VISIBLE_DEVICES"]
    assert json.loads((work / "state/kept" / GPUS_FILE).read_text()) == [held]
    async with running_agent(work, gpus=("0", "1")) as client:
        assert (await client.get("/v1/trials/kept")).json()["state"] == "running"
        other = "1" if held == "0" else "0"
        assert (await _health(client))["free_gpus"] == [other]
        response = await client.post("/v1/trials", json=_gpu_trial(tmp_path, "next", 1))
        assert response.status_code == 201, response.text
        assert (await _env_of(tmp_path, "next"))["CUDA_VISIBLE_DEVICES"] == other
        busy = await client.post("/v1/trials", json=_gpu_trial(tmp_path, "more", 1))
        assert busy.status_code == 429
        for trial_id in ("kept", "next"):
            await client.post(f"/v1/trials/{trial_id}/cancel")


def test_hbd_validate_refuses_half_a_gpu_in_one_line_naming_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hbd.cli import main

    source = Path(__file__).parent.parent / "polyaxon/specs/06-env-resources.yaml"
    path = tmp_path / "spec.yaml"
    path.write_text(source.read_text().replace("nvidia.com/gpu: 1", "nvidia.com/gpu: 0.5"))
    (tmp_path / "components").mkdir()
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "resources" in err and "limits" in err, err
    assert "'0.5' is not a whole number of GPU devices" in err, err
    assert "Traceback" not in err


# ---------------------------------------------------------------- `hbd executor --gpus`


def _start_executor(tmp_path: Path, work: Path, log: Path) -> tuple[Any, str]:
    """`hbd executor --gpus 0,1` as its own process; (process, url) once it serves."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("HBD_")}
    env.pop("NOTIFY_SOCKET", None)
    argv = [sys.executable, "-m", "hbd", "executor", "--port", "0", "--slots", "3"]
    argv += ["--gpus", "0,1", "--workdir", str(work), "--log-format", "json"]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=tmp_path,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if '"hbd executor serving"' in line:
                return proc, str(json.loads(line)["url"])
        if proc.poll() is not None:
            raise AssertionError(f"executor exited: {log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("executor never served")


@pytest.mark.slow
async def test_a_restarted_executor_process_keeps_the_devices_its_trials_hold(
    tmp_path: Path,
) -> None:
    import signal

    work = tmp_path / "work"
    procs = []
    try:
        first, url = _start_executor(tmp_path, work, tmp_path / "first.log")
        procs.append(first)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            health = await _health(client)
            assert health["gpus"] == ["0", "1"]
            body = _gpu_trial(tmp_path, "kept", 1)
            assert (await client.post("/v1/trials", json=body)).status_code == 201
            held = (await _env_of(tmp_path, "kept"))["CUDA_VISIBLE_DEVICES"]
        first.send_signal(signal.SIGTERM)  # a service keeps its trials running
        assert first.wait(timeout=30) == 0

        second, url = _start_executor(tmp_path, work, tmp_path / "second.log")
        procs.append(second)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.get("/v1/trials/kept")).json()["state"] == "running"
            assert (await _health(client))["free_gpus"] == [d for d in ("0", "1") if d != held]
            await client.post("/v1/trials/kept/cancel")
            assert (await wait_for(client, "kept"))["state"] == "cancelled"
            assert (await _health(client))["free_gpus"] == ["0", "1"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        child = results.read_child(work.resolve(), "kept")  # a trial left behind by a failure
        if child is not None:
            process.kill_group(*child)


@pytest.mark.slow
async def test_three_trials_posted_at_once_for_two_devices_two_run_one_waits(
    tmp_path: Path,
) -> None:
    async with running_agent(tmp_path / "work", slots=3, gpus=("0", "1")) as client:
        codes: dict[str, int] = {}

        async def post(trial_id: str) -> None:
            body = _gpu_trial(tmp_path, trial_id, 1)
            codes[trial_id] = (await client.post("/v1/trials", json=body)).status_code

        async with anyio.create_task_group() as tg:
            for trial_id in ("x", "y", "z"):
                tg.start_soon(post, trial_id)
        assert sorted(codes.values()) == [201, 201, 429], codes
        started = [t for t, code in codes.items() if code == 201]
        devices = [(await _env_of(tmp_path, t))["CUDA_VISIBLE_DEVICES"] for t in started]
        assert sorted(devices) == ["0", "1"]
        for trial_id in started:
            await client.post(f"/v1/trials/{trial_id}/cancel")
