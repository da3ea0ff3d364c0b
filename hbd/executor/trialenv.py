"""What a trial process is given: its rendered argv and its environment.

One definition for every place a trial starts (the agent, and a Ray job's
entrypoint on a cluster node), so that a trial sees the same contract
wherever it runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hbd.core.templating import format_value, render_argv
from hbd.executor import results
from hbd.executor.process import build_env
from hbd.protocol import TrialSubmission


def template_values(sub: TrialSubmission) -> dict[str, Any]:
    # The rung's resource is authoritative even if params carries a stale copy.
    return {**sub.params, sub.resource.name: sub.resource.value}


def trial_globals(workdir: Path, sub: TrialSubmission) -> dict[str, str]:
    # Polyaxon's `{{ globals.* }}` that only the executor knows: the trial's directory.
    directory = str(results.trial_dir(workdir, sub.id))
    return {
        "run_uuid": sub.id,
        "uuid": sub.id,
        "run_outputs_path": directory,
        "run_artifacts_path": directory,
    }


def trial_argv(workdir: Path, sub: TrialSubmission) -> list[str]:
    """The submission's command with its placeholders rendered."""
    return render_argv(sub.command, template_values(sub), trial_globals(workdir, sub))


def trial_env(
    sub: TrialSubmission,
    directory: Path,
    *,
    checkpoint: Path,
    resume: Path | None,
    devices: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Inherited environment, then the submission's, then hbd's variables.

    ``devices``: the GPU variables (CUDA_VISIBLE_DEVICES, HBD_GPUS) where the
    executor assigns devices itself.
    """
    resource = format_value(sub.resource.value)
    hbd_vars = {
        sub.resource.name: resource,
        sub.resource.name.upper(): resource,
        "HBD_TRIAL_ID": sub.id,
        "HBD_SWEEP_ID": sub.sweep_id,
        "HBD_TRIAL_DIR": str(directory),
        "HBD_RESOURCE": resource,
        "HBD_METRICS_FILE": str(directory / results.METRICS_FILE),
        "HBD_CHECKPOINT_DIR": str(checkpoint),
    }
    if resume is not None and resume.is_dir():
        hbd_vars["HBD_RESUME_FROM"] = str(resume)
    hbd_vars.update(devices or {})
    # The executor's own HBD_* settings (tokens, a stale HBD_RESUME_FROM) are
    # not the trial's business.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("HBD_")}
    return build_env(inherited, sub.env, hbd_vars)
