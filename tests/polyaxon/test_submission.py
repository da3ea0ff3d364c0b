"""What the daemon sends an executor for a Polyaxon operation's trial run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from hbd.core.events import Begin, StartTrial
from hbd.core.spec import load_spec
from hbd.core.sweep import SweepMachine
from hbd.daemon.app import Daemon
from hbd.protocol import TrialSubmission
from hbd.specfile import resolve_spec
from hbd.store.log import Store

SPECS = Path(__file__).parent / "specs"


def submissions(name: str) -> list[TrialSubmission]:
    path = SPECS / name
    spec = load_spec(resolve_spec(path.read_text(), path.parent))
    machine = SweepMachine.for_spec(spec, sweep_id="sw", seed=2)
    runner: Any = SimpleNamespace(spec=spec, sweep_id="sw", machine=machine)
    daemon = Daemon(cast(Store, None), callback_url="http://127.0.0.1:1/v1/callbacks")
    starts = [d for d in machine.handle(Begin()) if isinstance(d, StartTrial)]
    return [daemon.submission(runner, s) for s in starts]


def test_timeout_working_dir_env_and_resources_travel_in_the_submission() -> None:
    subs = submissions("06-env-resources.yaml")
    assert len(subs) == 9 + 5 + 3  # rung 0 of each bracket of maxIterations=9, eta=3
    for sub in subs:
        assert sub.timeout_seconds == 3600.0
        assert sub.working_dir == str((SPECS / "components").resolve())
        assert sub.env["DATASET"] == "cifar10" and sub.env["OMP_NUM_THREADS"] == "4"
        assert sub.env["RUN_LR"] == f"lr={sub.params['lr']!r}"
        assert sub.resources is not None
        assert sub.resources.limits == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}
        assert sub.resources.requests == {"cpu": "2", "memory": "4Gi"}
        # a float resource on a float input: 1.0, not 1
        assert sub.command[-1] == f"--epochs={float(sub.resource.value)!r}"
        # what the agent stores reads back equal (protocol round trip)
        assert TrialSubmission.model_validate_json(sub.model_dump_json()) == sub


def test_operation_params_and_as_args_are_rendered_by_the_daemon() -> None:
    for sub in submissions("04-operation-params.yaml"):
        argv = sub.command
        assert argv[:3] == ["python3", "train.py", "--data=/data/mnist"]
        assert "--epochs=5" in argv and "--optimizer=sgd" in argv
        assert not any(a.startswith("--data_path") for a in argv)  # contextOnly
        batch = next(a for a in argv if a.startswith("--batch_size="))
        assert batch.split("=")[1] in ("32", "64", "128")  # ints, not 64.0
        assert sub.params["epochs"] == 5 and type(sub.params["batch_size"]) is int
        assert sub.timeout_seconds is None and sub.working_dir is None and sub.resources is None


def test_globals_leave_only_the_executors_part() -> None:
    for sub in submissions("09-globals.yaml"):
        argv = sub.command
        assert f"--run={sub.id}" in argv and sub.env["RUN_ID"] == sub.id
        bracket, rung = int(sub.id.split("-s")[1].split("-")[0]), 0
        assert f"--iteration={2 - bracket}.{rung}" in argv
        assert "--out={{ globals.run_outputs_path }}/model" in argv
