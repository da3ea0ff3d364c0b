"""More Hyperband iterations for a sweep (``hbd extend``, ``POST /v1/sweeps/{id}/extend``).

The request is checked here, where it can still be refused with a readable
reason (HTTP 409/422). A running sweep gets it through its runner, as a
``SweepExtended`` observation: logged as ``sweep.extended`` with the trials it
plans, in one step, like every other observation. A sweep that finished with
every bracket done is reopened: its machine is rebuilt from the log (the same
replay a restart does, checked), takes the extension, and the step is logged
(``sweep.extended`` moves the projection back to running) before a new runner
starts its trials. A stopped sweep stays stopped. Either way a replay of the
log extends alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import anyio

from hbd.core.codec import observation_record
from hbd.core.errors import CoreError
from hbd.core.events import SweepExtended
from hbd.core.limits import MAX_HYPERBAND_ITERATIONS, planned_trial_runs
from hbd.core.sweep import SweepMachine
from hbd.daemon.lifecycle import decision_records, started_rungs
from hbd.daemon.runner import REPLAY_TYPES, UNRESUMABLE, Observe, replay, sweep_spec
from hbd.errors import HbdError, NotFound

if TYPE_CHECKING:
    from hbd.daemon.app import Daemon

__all__ = ["CannotExtend", "extend"]

# One reopening at a time per daemon: two extends of one finished sweep must
# not both rebuild it and start two runners.
_REOPENING: WeakKeyDictionary[Daemon, anyio.Lock] = WeakKeyDictionary()


class CannotExtend(HbdError):
    """The sweep cannot take more iterations now (HTTP 409); nothing was logged."""


def _check(daemon: Daemon, machine: SweepMachine, iterations: int) -> int:
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
    return total


async def extend(daemon: Daemon, sweep_id: str, iterations: int) -> int:
    """Ask the sweep for ``iterations`` more; the sweep's iterations in all, once planned."""
    if not 1 <= iterations <= MAX_HYPERBAND_ITERATIONS:
        raise ValueError(f"iterations must be 1 to {MAX_HYPERBAND_ITERATIONS}, got {iterations}")
    runner = daemon.runners.get(sweep_id)
    if runner is None:
        lock = _REOPENING.setdefault(daemon, anyio.Lock())
        async with lock:
            return await _reopen(daemon, sweep_id, iterations)
    machine = runner.machine
    if machine.state.value != "running":
        raise CannotExtend(f"sweep {sweep_id} is {machine.state.value}: it is not extended")
    total = _check(daemon, machine, iterations)
    await runner.put(Observe(SweepExtended(iterations=iterations)))
    return total


async def _reopen(daemon: Daemon, sweep_id: str, iterations: int) -> int:
    if sweep_id in daemon.runners:  # reopened by the extend we waited for
        return await extend(daemon, sweep_id, iterations)
    sweep = await daemon.store.get_sweep(sweep_id)
    if sweep is None:
        raise NotFound(f"no sweep {sweep_id}")
    if not sweep.finished:
        raise CannotExtend(
            f"sweep {sweep_id} has no runner (the daemon is starting, or cannot resume it)"
        )
    events = await daemon.store.sweep_events(sweep_id, types=REPLAY_TYPES)
    try:
        machine = replay(sweep_id, events)
    except UNRESUMABLE as exc:
        raise CannotExtend(f"sweep {sweep_id} cannot be rebuilt from its log: {exc}") from None
    total = _check(daemon, machine, iterations)
    started = started_rungs(machine.trials.values())
    observation = SweepExtended(iterations=iterations)
    try:
        decisions = machine.handle(observation)
    except CoreError as exc:  # InvalidTransition: a stopped sweep
        raise CannotExtend(f"sweep {sweep_id} is {sweep.status}: {exc}") from None
    records = [observation_record(observation), *decision_records(decisions, started)]
    committed = await daemon.store.append(sweep_id, records, at=daemon.clock.wall())
    daemon.published(committed)
    spec, _ = sweep_spec(events)
    runner = daemon.new_runner(spec, machine)
    daemon.start_runner(runner)
    for decision in decisions:
        await runner.act(decision)
    return total
