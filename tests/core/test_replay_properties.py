"""State is a function of the observations: completion order does not change the
decisions, and replaying any prefix of the history rebuilds the same machine."""

from __future__ import annotations

import random
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from hbd.core.events import Observation, StartTrial, TrialFailed, TrialSucceeded
from tests.core.helpers import canonical, drive, make_machine


def random_outcome(salt: int, fail_share: float):  # type: ignore[no-untyped-def]
    """A random objective that is still a function of the trial (not of the order)."""

    def outcome(s: StartTrial) -> Observation:
        h = zlib.crc32(f"{salt}:{s.trial_id}".encode()) / 2**32
        if h < fail_share:
            return TrialFailed(trial_id=s.trial_id, reason="random failure")
        # coarse values make ties common, which exercises the tie-break
        return TrialSucceeded(trial_id=s.trial_id, metrics={"loss": round(h * 10) / 10})

    return outcome


@settings(max_examples=40, deadline=None)
@given(
    salt=st.integers(0, 10**6),
    fail_share=st.sampled_from([0.0, 0.2, 0.6]),
    order_a=st.integers(0, 10**6),
    order_b=st.integers(0, 10**6),
    r=st.sampled_from([9, 27, 10]),
    eta=st.sampled_from([2, 3]),
    retries=st.sampled_from([0, 0, 2]),  # failures are drawn per attempt id, so retries may pass
)
def test_decisions_do_not_depend_on_completion_order(
    salt, fail_share, order_a, order_b, r, eta, retries
) -> None:  # type: ignore[no-untyped-def]
    outcome = random_outcome(salt, fail_share)
    kwargs = {"max_iterations": r, "eta": eta, "max_retries": retries}
    a = drive(make_machine(**kwargs), outcome, rng=random.Random(order_a))
    b = drive(make_machine(**kwargs), outcome, rng=random.Random(order_b))
    assert canonical(a.decisions) == canonical(b.decisions)
    assert a.finished == b.finished


@settings(max_examples=25, deadline=None)
@given(
    salt=st.integers(0, 10**6),
    order=st.integers(0, 10**6),
    cut=st.floats(0, 1),
    stop=st.booleans(),
    early=st.booleans(),
)
def test_replaying_any_prefix_rebuilds_state_and_next_decisions(
    salt, order, cut, stop, early
) -> None:  # type: ignore[no-untyped-def]
    conditions = [{"kind": "failure_early_stopping", "percent": 40}] if early else []
    kwargs = {"max_iterations": 27, "early_stopping": conditions, "max_retries": 1}
    outcome = random_outcome(salt, 0.25)
    full = drive(
        make_machine(**kwargs),
        outcome,
        rng=random.Random(order),
        stop_after=7 if stop else None,
        record=True,
    )
    k = 1 + int(cut * (len(full.observations) - 2))  # at least Begin, and one observation left

    replayed = make_machine(**kwargs)
    for obs in full.observations[:k]:
        replayed.handle(obs)
    assert replayed.snapshot() == full.snapshots[k - 1]
    assert replayed.handle(full.observations[k]) == full.steps[k]
