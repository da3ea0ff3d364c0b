"""README's GPU host and shared checkpoint setup (ckpt helper): what it shows is valid."""

from __future__ import annotations

from pathlib import Path

from hbd.cli.service import _DAEMON_FLAGS
from hbd.core.spec import load_spec
from hbd.daemon.dispatcher import trial_resources
from hbd.settings import DaemonSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SECTION = README.split("**A GPU host.**", 1)[1].split("## HTTP API", 1)[0]


def test_the_gpu_spec_in_the_readme_is_valid_and_asks_one_device() -> None:
    block = SECTION.split("```yaml", 1)[1].split("```", 1)[0]
    spec = load_spec(block)
    resources = trial_resources(spec)
    assert resources is not None and resources.gpus == 1
    assert spec.matrix.resume


def test_the_commands_in_the_readme_use_flags_that_exist() -> None:
    assert "hbd serve --local-executor 4 --gpus 0,1,2,3" in SECTION
    for flag in ("--checkpoints", "--gpus", "--local-executor", "--executor"):
        assert flag in _DAEMON_FLAGS.values() and flag in SECTION
    for store in ("/mnt/ckpt", "s3://bucket/hbd"):
        assert f"--checkpoints {store}" in SECTION
        assert DaemonSettings(checkpoints=store).shared_checkpoints
