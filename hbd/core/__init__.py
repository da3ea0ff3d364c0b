"""The pure core: spec, search space, Hyperband geometry and the sweep state machine.

Nothing here performs I/O, reads a clock or uses a global RNG; the daemon drives
it (see ``SweepMachine.handle``).

The names below are imported on first use (PEP 562): ``import hbd.core.spec``
(what ``hbd validate`` needs) must not also build the sweep machine, its
events and the sampler, which would cost every short command their start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hbd.core.errors import (
        CoreError,
        DuplicateEvent,
        InvalidTransition,
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
        SweepFinished,
        TrialCancelled,
        TrialFailed,
        TrialInterrupted,
        TrialSucceeded,
    )
    from hbd.core.geometry import Bracket, Rung, brackets
    from hbd.core.spec import SweepSpec, load_spec, parse_spec
    from hbd.core.sweep import SweepMachine, trial_id

# Each exported name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(
        ("CoreError", "DuplicateEvent", "InvalidTransition", "SpecError", "SpecProblem"),
        "hbd.core.errors",
    ),
    **dict.fromkeys(
        (
            "Begin",
            "BestTrial",
            "CancelTrials",
            "Decision",
            "EarlyStopped",
            "Observation",
            "RankedTrial",
            "RungDecided",
            "StartTrial",
            "StopRequested",
            "SweepFinished",
            "TrialCancelled",
            "TrialFailed",
            "TrialInterrupted",
            "TrialSucceeded",
        ),
        "hbd.core.events",
    ),
    **dict.fromkeys(("Bracket", "Rung", "brackets"), "hbd.core.geometry"),
    **dict.fromkeys(("SweepSpec", "load_spec", "parse_spec"), "hbd.core.spec"),
    **dict.fromkeys(("SweepMachine", "trial_id"), "hbd.core.sweep"),
}

__all__ = [
    "Begin",
    "BestTrial",
    "Bracket",
    "CancelTrials",
    "CoreError",
    "Decision",
    "DuplicateEvent",
    "EarlyStopped",
    "InvalidTransition",
    "Observation",
    "RankedTrial",
    "Rung",
    "RungDecided",
    "SpecError",
    "SpecProblem",
    "StartTrial",
    "StopRequested",
    "SweepFinished",
    "SweepMachine",
    "SweepSpec",
    "TrialCancelled",
    "TrialFailed",
    "TrialInterrupted",
    "TrialSucceeded",
    "brackets",
    "load_spec",
    "parse_spec",
    "trial_id",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hbd.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
