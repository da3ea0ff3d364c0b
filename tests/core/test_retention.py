"""Checkpoint retention (hbd.core.retention): a table of sweeps and what may go."""

from __future__ import annotations

import pytest

from hbd.core.retention import CheckpointOwner, deletable


def T(
    tid: str, rung: int, state: str, parent: str | None = None, promoted: bool = False
) -> CheckpointOwner:
    return CheckpointOwner(
        trial_id=tid, bracket=0, rung=rung, state=state, parent=parent, promoted=promoted
    )


# One bracket: a, b, c at rung 0; a promoted to a1 at rung 1.
RUNG0 = [T("a", 0, "succeeded", promoted=True), T("b", 0, "succeeded"), T("c", 0, "failed")]

CASES = [
    # (name, trials, decided, best, expected[, deleted])
    ("nothing decided: everything kept", RUNG0, set(), None, []),
    ("rung decided: the losers go, the promoted one stays", RUNG0, {(0, 0)}, None, ["b", "c"]),
    (
        "a running trial's checkpoint is never deleted",
        [T("a", 0, "running"), T("b", 0, "succeeded")],
        {(0, 0)},
        None,
        ["b"],
    ),
    (
        "a queued child keeps its parent even if the parent was not marked promoted",
        [T("a", 0, "succeeded"), T("a1", 1, "queued", parent="a")],
        {(0, 0)},
        None,
        [],
    ),
    (
        "a running child keeps its promoted parent",
        [*RUNG0, T("a1", 1, "running", parent="a")],
        {(0, 0)},
        None,
        ["b", "c"],
    ),
    (
        "a succeeded child whose rung is decided supersedes its parent",
        [*RUNG0, T("a1", 1, "succeeded", parent="a")],
        {(0, 0), (0, 1)},
        None,
        ["a", "b", "c", "a1"],
    ),
    (
        "a succeeded child whose rung is not decided yet: parent stays",
        [*RUNG0, T("a1", 1, "succeeded", parent="a")],
        {(0, 0)},
        None,
        ["b", "c"],
    ),
    (
        "a failed child may run again from its parent: parent stays",
        [*RUNG0, T("a1", 1, "failed", parent="a")],
        {(0, 0), (0, 1)},
        None,
        ["b", "c", "a1"],
    ),
    (
        "the best trial and its lineage are kept",
        [*RUNG0, T("a1", 1, "succeeded", parent="a")],
        {(0, 0), (0, 1)},
        "a1",
        ["b", "c"],
    ),
    (
        "a best trial at rung 0 is kept though it lost",
        RUNG0,
        {(0, 0)},
        "b",
        ["c"],
    ),
    (
        "already deleted ones are not returned again",
        RUNG0,
        {(0, 0)},
        None,
        ["c"],
        {"b"},
    ),
    (
        "a cancelled or stopped trial in a decided rung goes",
        [T("x", 0, "cancelled"), T("y", 0, "stopped"), T("z", 0, "scheduled")],
        {(0, 0)},
        None,
        ["x", "y"],
    ),
    (
        "a cycle in parents (hostile input) ends the lineage walk",
        [
            T("p", 0, "succeeded", parent="q"),
            T("q", 0, "succeeded", parent="p"),
            T("r", 0, "failed"),
        ],
        {(0, 0)},
        "p",
        ["r"],
    ),
]


@pytest.mark.parametrize(
    ("trials", "decided", "best", "expected", "deleted"),
    [(*c[1:], *([] if len(c) > 5 else [set()])) for c in CASES],
    ids=[str(c[0]) for c in CASES],
)
def test_resumable_keeps_what_can_still_be_resumed_and_the_best_lineage(
    trials: list[CheckpointOwner],
    decided: set[tuple[int, int]],
    best: str | None,
    expected: list[str],
    deleted: set[str],
) -> None:
    assert deletable(trials, decided=decided, best=best, deleted=deleted) == expected


def test_rungs_are_told_apart_by_bracket() -> None:
    other = CheckpointOwner(trial_id="o", bracket=1, rung=0, state="succeeded")
    assert deletable([other], decided={(0, 0)}, best=None) == []
    assert deletable([other], decided={(1, 0)}, best=None) == ["o"]


def test_keep_all_never_deletes_and_an_unknown_mode_is_refused() -> None:
    assert deletable(RUNG0, decided={(0, 0)}, best=None, keep="all") == []
    with pytest.raises(ValueError, match="keep must be one of all, resumable"):
        deletable(RUNG0, decided={(0, 0)}, best=None, keep="some")  # type: ignore[arg-type]


def test_the_answer_follows_the_input_order_and_repeats_are_returned_once() -> None:
    trials = [T("z", 0, "failed"), T("a", 0, "failed"), T("z", 0, "failed")]
    assert deletable(trials, decided={(0, 0)}, best=None) == ["z", "a"]
