"""Errors raised by the pure core.

    CoreError
    ├── SpecError            a sweep spec is invalid; carries every problem found
    ├── InvalidTransition    an event is illegal in the machine's current state
    │   └── DuplicateEvent   the same event was already applied (safe to ignore)
    └── ReplayDiverged       a replay re-derived a decision other than the logged one

Any other exception escaping ``hbd.core`` is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass


class CoreError(Exception):
    """Base of every error the core raises on purpose."""


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """One thing wrong with a spec: where (a dotted path) and why."""

    loc: str
    msg: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.msg}" if self.loc else self.msg


class SpecError(CoreError):
    """A spec failed validation. ``problems`` lists every error found, in order."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid sweep spec ({len(self.problems)} error(s)):\n{lines}")


class InvalidTransition(CoreError):
    """An event cannot be applied in the current state; nothing was changed."""

    def __init__(
        self,
        *,
        event: str,
        state: str,
        sweep_id: str,
        trial_id: str | None = None,
        detail: str = "",
    ) -> None:
        self.event = event
        self.state = state
        self.sweep_id = sweep_id
        self.trial_id = trial_id
        where = f"sweep {sweep_id}" + (f", trial {trial_id}" if trial_id else "")
        extra = f": {detail}" if detail else ""
        super().__init__(f"{event} is not allowed in state {state!r} ({where}){extra}")


class DuplicateEvent(InvalidTransition):
    """The event repeats one already applied; callers may drop it."""


# The most of one value (a config, a list of promoted ids) a ReplayDiverged
# message shows, in characters: the message goes to the log and to /healthz,
# and a config may hold hundreds of parameters. The full values stay on the
# exception's attributes.
MAX_SHOWN_CHARS = 500


def _shown(value: object) -> str:
    text = repr(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]}[... {len(text) - MAX_SHOWN_CHARS} characters cut]"


class ReplayDiverged(CoreError):
    """Replaying a sweep's log re-derived a decision other than the one logged.

    The log is the truth: the sweep must not continue on the re-derived
    decisions (an installed numpy that draws other numbers, a changed core).
    ``seq`` is the first logged event that differs (or where a derived
    decision is missing from the log), ``what`` names the field, and
    ``logged`` / ``derived`` are both values (None where one side has nothing).
    """

    def __init__(
        self, *, sweep_id: str, seq: int, what: str, logged: object, derived: object
    ) -> None:
        self.sweep_id = sweep_id
        self.seq = seq
        self.what = what
        self.logged = logged
        self.derived = derived
        super().__init__(
            f"sweep {sweep_id}: replay diverged from the log at seq {seq} ({what}): "
            f"logged {_shown(logged)}, re-derived {_shown(derived)}"
        )
