"""Review: operator mistakes and hostile listings against checkpoint stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from hbd.checkpoints import CHECKPOINTS_DIR, open_store


@pytest.mark.parametrize("spelling", ["{}", "{}/", "{}/../checkpoints"])
def test_a_file_url_naming_the_executors_own_directory_keeps_the_checkpoint(
    tmp_path: Path, spelling: str
) -> None:
    # Bug: an operator sets checkpoints = file://<workdir>/checkpoints (the
    # executor's own directory, the staging area of a URL store): publish
    # first removed "the earlier run's files" at the remote path, which was
    # the trial's directory itself, and the checkpoint was lost.
    workdir = tmp_path / "agent"
    local = workdir / CHECKPOINTS_DIR
    url = "file://" + spelling.format(local)
    store = open_store(url, workdir)
    directory = store.trial_dir("t1")
    directory.mkdir(parents=True)
    (directory / "weights.bin").write_bytes(b"w" * 100)
    store.publish("t1", 10**6)
    assert (directory / "weights.bin").read_bytes() == b"w" * 100
    # A child resuming from it finds it (here, or by download elsewhere).
    assert (store.resume_dir("t1") / "weights.bin").read_bytes() == b"w" * 100
