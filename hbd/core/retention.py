"""Checkpoint retention: which trials' checkpoints may be deleted now (pure).

A Hyperband sweep writes a checkpoint per trial; most are dead weight once
their rung is decided (69 of 69 kept after the demo). With ``keep =
"resumable"`` (the default) a checkpoint is deleted once nothing can resume
from it any more and it is not part of the best trial's lineage:

- its trial has ended (a scheduled or running trial is still writing it);
- its rung is decided (until then it may yet be promoted);
- it was not promoted, or every trial resuming from it has succeeded and
  had its own rung decided (their checkpoints supersede it; a child that
  failed may run again from it, so it stays);
- no trial still to run (scheduled/queued/running) resumes from it;
- it is not the best trial nor one of its ancestors (``parent`` links).

With ``keep = "all"`` nothing is ever deleted. The daemon calls
:func:`deletable` when a rung is decided and when a sweep ends, deletes what
it returns (the executor's ``DELETE /v1/trials/{id}/checkpoint`` or the
shared store's ``delete``) and passes what it deleted as ``deleted`` next
time. The answer depends only on the arguments: the order of ``trials``
gives the order of the result.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Keep = Literal["all", "resumable"]
KEEP_MODES: tuple[Keep, ...] = ("all", "resumable")
DEFAULT_KEEP: Keep = "resumable"

# Trial states after which a trial writes nothing more (hbd.core.bracket.TrialState
# values; "stopped" for a trial a sweep stop ended). Any other state (scheduled,
# queued, running) is a trial that may still run.
ENDED_STATES = frozenset({"succeeded", "failed", "cancelled", "stopped"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointOwner:
    """One trial of a sweep as retention sees it."""

    trial_id: str
    bracket: int
    rung: int
    state: str  # a TrialState value, or "queued"/"running" as the daemon sees it
    parent: str | None = None  # the trial it resumes from (resume_from)
    promoted: bool = False  # its rung's decision promoted it


def deletable(
    trials: Sequence[CheckpointOwner],
    *,
    decided: Collection[tuple[int, int]],
    best: str | None,
    keep: Keep = DEFAULT_KEEP,
    deleted: Collection[str] = (),
) -> list[str]:
    """The ids (in ``trials`` order) whose checkpoints may be deleted now.

    ``decided``: the (bracket, rung) pairs whose promotion decision is made.
    ``best``: the sweep's best trial so far (its lineage is kept), if any.
    ``deleted``: ids already deleted (never returned again).
    """
    if keep not in KEEP_MODES:
        raise ValueError(f"keep must be one of {', '.join(KEEP_MODES)}, not {keep!r}")
    if keep == "all":
        return []
    by_id = {t.trial_id: t for t in trials}
    lineage = set(_lineage(best, by_id))
    children: dict[str, list[CheckpointOwner]] = {}
    for t in trials:
        if t.parent is not None:
            children.setdefault(t.parent, []).append(t)
    decided_set = set(decided)
    gone = set(deleted)

    def superseded(t: CheckpointOwner) -> bool:
        # Promoted: needed until each child has its own checkpoint for good.
        kids = children.get(t.trial_id, [])
        return bool(kids) and all(
            k.state == "succeeded" and (k.bracket, k.rung) in decided_set for k in kids
        )

    out: list[str] = []
    for t in trials:
        if t.trial_id in gone or t.trial_id in lineage:
            continue
        if t.state not in ENDED_STATES or (t.bracket, t.rung) not in decided_set:
            continue
        if any(k.state not in ENDED_STATES for k in children.get(t.trial_id, [])):
            continue  # a child still to run resumes from it
        if t.promoted and not superseded(t):
            continue
        out.append(t.trial_id)
        gone.add(t.trial_id)  # a repeated id is returned once
    return out


def _lineage(best: str | None, by_id: dict[str, CheckpointOwner]) -> Iterable[str]:
    """``best`` and its ancestors; a cycle in hostile input ends the walk."""
    seen: set[str] = set()
    current = best
    while current is not None and current not in seen:
        seen.add(current)
        yield current
        owner = by_id.get(current)
        current = owner.parent if owner is not None else None


__all__ = ["DEFAULT_KEEP", "ENDED_STATES", "KEEP_MODES", "CheckpointOwner", "Keep", "deletable"]
