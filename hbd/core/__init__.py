"""The pure core: spec, search space, Hyperband geometry and the sweep state machine.

Nothing here performs I/O, reads a clock or uses a global RNG; the daemon drives
it (see ``SweepMachine.handle``).

The names below load on first use (PEP 562), so that importing one small core
module (``hbd.core.vocabulary`` from the CLI, say) does not load pydantic.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hbd.core.errors import (
        CoreError,
        DuplicateEvent,
        InvalidTransition,
        ReplayDiverged,
        SpecError,
        SpecProblem,
    )
    from hbd.core.events import (
        Begin,
        BestTrial,
        CancelTrials,
        Decision,
        EarlyStopped,
        Observation,
        RankedTrial,
        RungDecided,
        StartTrial,
        StopRequested,
        SweepExtended,
        SweepFinished,
        TrialCancelled,
        TrialFailed,
        TrialInterrupted,
        TrialSucceeded,
    )
    from hbd.core.geometry import Bracket, Rung, brackets
    from hbd.core.sampler import RandomSampler, RunResult, Sampler
    from hbd.core.scheduler import (
        AsynchronousHyperband,
        Scheduler,
        Slot,
        Step,
        SynchronousHyperband,
    )
    from hbd.core.search import Search
    from hbd.core.spec import SweepSpec, load_spec, parse_spec
    from hbd.core.sweep import SweepMachine, trial_id
    from hbd.core.tpe import BOHBSampler, BOHBSettings
    from hbd.core.vocabulary import EventType, SweepStatus, TrialStatus

# Public name -> the module that defines it.
_HOMES = {
    "CoreError": "hbd.core.errors",
    "DuplicateEvent": "hbd.core.errors",
    "InvalidTransition": "hbd.core.errors",
    "ReplayDiverged": "hbd.core.errors",
    "SpecError": "hbd.core.errors",
    "SpecProblem": "hbd.core.errors",
    "Begin": "hbd.core.events",
    "BestTrial": "hbd.core.events",
    "CancelTrials": "hbd.core.events",
    "Decision": "hbd.core.events",
    "EarlyStopped": "hbd.core.events",
    "Observation": "hbd.core.events",
    "RankedTrial": "hbd.core.events",
    "RungDecided": "hbd.core.events",
    "StartTrial": "hbd.core.events",
    "StopRequested": "hbd.core.events",
    "SweepExtended": "hbd.core.events",
    "SweepFinished": "hbd.core.events",
    "TrialCancelled": "hbd.core.events",
    "TrialFailed": "hbd.core.events",
    "TrialInterrupted": "hbd.core.events",
    "TrialSucceeded": "hbd.core.events",
    "Bracket": "hbd.core.geometry",
    "Rung": "hbd.core.geometry",
    "brackets": "hbd.core.geometry",
    "RandomSampler": "hbd.core.sampler",
    "RunResult": "hbd.core.sampler",
    "Sampler": "hbd.core.sampler",
    "Scheduler": "hbd.core.scheduler",
    "AsynchronousHyperband": "hbd.core.scheduler",
    "Search": "hbd.core.search",
    "BOHBSampler": "hbd.core.tpe",
    "BOHBSettings": "hbd.core.tpe",
    "Slot": "hbd.core.scheduler",
    "Step": "hbd.core.scheduler",
    "SynchronousHyperband": "hbd.core.scheduler",
    "SweepSpec": "hbd.core.spec",
    "load_spec": "hbd.core.spec",
    "parse_spec": "hbd.core.spec",
    "SweepMachine": "hbd.core.sweep",
    "trial_id": "hbd.core.sweep",
    "EventType": "hbd.core.vocabulary",
    "SweepStatus": "hbd.core.vocabulary",
    "TrialStatus": "hbd.core.vocabulary",
}

__all__ = [
    "AsynchronousHyperband",
    "BOHBSampler",
    "BOHBSettings",
    "Begin",
    "BestTrial",
    "Bracket",
    "CancelTrials",
    "CoreError",
    "Decision",
    "DuplicateEvent",
    "EarlyStopped",
    "EventType",
    "InvalidTransition",
    "Observation",
    "RandomSampler",
    "RankedTrial",
    "ReplayDiverged",
    "RunResult",
    "Rung",
    "RungDecided",
    "Sampler",
    "Scheduler",
    "Search",
    "Slot",
    "SpecError",
    "SpecProblem",
    "StartTrial",
    "Step",
    "StopRequested",
    "SweepExtended",
    "SweepFinished",
    "SweepMachine",
    "SweepSpec",
    "SweepStatus",
    "SynchronousHyperband",
    "TrialCancelled",
    "TrialFailed",
    "TrialInterrupted",
    "TrialStatus",
    "TrialSucceeded",
    "brackets",
    "load_spec",
    "parse_spec",
    "trial_id",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'hbd.core' has no attribute {name!r}")
    return getattr(import_module(home), name)
