"""More Hyperband iterations for a running sweep (``hbd extend``, ``POST /v1/sweeps/{id}/extend``).

The request is checked here, where it can still be refused with a readable
reason (HTTP 409/422), and then goes to the sweep's runner as a
``SweepExtended`` observation: logged as ``sweep.extended`` with the trials it
plans, in one step, like every other observation, so a replay extends alike.

A finished sweep is not reopened by the daemon yet: its log holds its one
``sweep.finished`` (a UNIQUE index of the store), and reopening needs a store
migration first. The core supports it (``SweepMachine`` reopens a sweep that
finished with every bracket done).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hbd.core.events import SweepExtended
from hbd.core.limits import MAX_HYPERBAND_ITERATIONS, planned_trial_runs
from hbd.daemon.runner import Observe
from hbd.errors import HbdError, NotFound

if TYPE_CHECKING:
    from hbd.daemon.app import Daemon

__all__ = ["CannotExtend", "extend"]


class CannotExtend(HbdError):
    """The sweep cannot take more iterations now (HTTP 409); nothing was logged."""


async def extend(daemon: Daemon, sweep_id: str, iterations: int) -> int:
    """Ask the sweep for ``iterations`` more; the sweep's iterations in all, once planned."""
    if not 1 <= iterations <= MAX_HYPERBAND_ITERATIONS:
        raise ValueError(f"iterations must be 1 to {MAX_HYPERBAND_ITERATIONS}, got {iterations}")
    runner = daemon.runners.get(sweep_id)
    if runner is None:
        sweep = await daemon.store.get_sweep(sweep_id)
        if sweep is None:
            raise NotFound(f"no sweep {sweep_id}")
        raise CannotExtend(
            f"sweep {sweep_id} is {sweep.status}: only a running sweep can be extended"
        )
    machine = runner.machine
    if machine.state.value != "running":
        raise CannotExtend(f"sweep {sweep_id} is {machine.state.value}: it is not extended")
    total = machine.scheduler.iterations + iterations
    if total > MAX_HYPERBAND_ITERATIONS:
        raise ValueError(
            f"{total} iterations in all is more than the limit of {MAX_HYPERBAND_ITERATIONS}"
        )
    matrix = machine.matrix
    runs = planned_trial_runs(matrix.max_iterations, matrix.eta) * total
    limit = daemon.spec_limits.max_trial_runs
    if runs > limit:
        raise ValueError(
            f"{total} iterations plan {runs:,} trial runs, more than the limit of "
            f"{limit:,} per sweep (setting max_trial_runs)"
        )
    await runner.put(Observe(SweepExtended(iterations=iterations)))
    return total
