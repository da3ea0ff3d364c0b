"""The pure core: spec, search space, Hyperband geometry and the sweep state machine.

Nothing here performs I/O, reads a clock or uses a global RNG; the daemon drives
it (see ``SweepMachine.handle``).
"""

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
    SweepFinished,
    TrialCancelled,
    TrialFailed,
    TrialInterrupted,
    TrialSucceeded,
)
from hbd.core.geometry import Bracket, Rung, brackets
from hbd.core.sampler import RandomSampler, RunResult, Sampler
from hbd.core.scheduler import Scheduler, Slot, Step, SynchronousHyperband
from hbd.core.spec import SweepSpec, load_spec, parse_spec
from hbd.core.sweep import SweepMachine, trial_id

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
    "RandomSampler",
    "RankedTrial",
    "ReplayDiverged",
    "RunResult",
    "Rung",
    "RungDecided",
    "Sampler",
    "Scheduler",
    "Slot",
    "SpecError",
    "SpecProblem",
    "StartTrial",
    "Step",
    "StopRequested",
    "SweepFinished",
    "SweepMachine",
    "SweepSpec",
    "SynchronousHyperband",
    "TrialCancelled",
    "TrialFailed",
    "TrialInterrupted",
    "TrialSucceeded",
    "brackets",
    "load_spec",
    "parse_spec",
    "trial_id",
]
