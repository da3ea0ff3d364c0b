"""What one trial run executes: its argv, environment and param values.

The daemon renders every template it can here (params, ``as_args``, the trial
id, Polyaxon's hyperband ``iteration``/``bracket_iteration``); the executor
renders the globals only it knows (the trial's directory), see
``hbd.core.templating``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hbd.core import geometry
from hbd.core.spec import SweepSpec
from hbd.core.templating import (
    EXECUTOR_GLOBALS,
    ParamValue,
    format_value,
    render_items,
    render_text,
)

__all__ = ["TrialCommand", "trial_command"]


@dataclass(frozen=True, slots=True)
class TrialCommand:
    argv: list[str]
    env: dict[str, str]
    params: dict[str, Any]  # every value the trial receives, by input/param name


def trial_command(
    spec: SweepSpec,
    config: Mapping[str, Any],
    resource: int | float,
    *,
    trial_id: str,
    bracket: int,
    rung: int,
) -> TrialCommand:
    """Render ``spec``'s container for one trial run; raises TemplateError/ValueError."""
    inputs = spec.inputs
    values = spec.fixed_params()
    values.update(spec.cast_config(config))
    name = spec.matrix.resource.name
    values[name] = inputs[name].cast(resource) if name in inputs else resource

    shown: dict[str, ParamValue] = {}
    for key, value in values.items():
        io = inputs.get(key)
        op = spec.params.get(key)
        shown[key] = ParamValue(
            value,
            is_flag=io is not None and io.is_flag,
            arg_format=io.arg_format if io is not None else None,
            in_args=not (op is not None and op.context_only),
        )
    s_max = geometry.s_max(spec.matrix.max_iterations, spec.matrix.eta)
    known = {
        "run_uuid": trial_id,
        "uuid": trial_id,
        # Polyaxon's hyperband: iteration i runs bracket s_max - i; its rung is
        # the bracket_iteration.
        "iteration": str(s_max - bracket),
        "bracket_iteration": str(rung),
    }
    container = spec.component.container
    argv = render_items(
        [*container.command, *container.args], shown, known, keep_globals=EXECUTOR_GLOBALS
    )
    env = {k: render_text(v, shown, known) for k, v in container.env.items()}
    for key, value in values.items():
        to_env = _to_env(spec, key)
        if to_env is not None and value is not None:
            env[to_env] = format_value(value)
    return TrialCommand(argv=argv, env=env, params=values)


def _to_env(spec: SweepSpec, name: str) -> str | None:
    op = spec.params.get(name)
    if op is not None and op.to_env is not None:
        return op.to_env
    io = spec.inputs.get(name)
    return io.to_env if io is not None else None
