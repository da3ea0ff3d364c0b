"""Hyperband arithmetic against Li et al. 2018, Table 1, with exact integers."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hbd.core.geometry import bracket, brackets, s_max

# (maxIterations, eta) -> per bracket s_max..0, the rungs as (configs, resource).
TABLES = {
    (81, 3): [
        [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
        [(34, 3), (11, 9), (3, 27), (1, 81)],
        [(15, 9), (5, 27), (1, 81)],
        [(8, 27), (2, 81)],
        [(5, 81)],
    ],
    (27, 3): [
        [(27, 1), (9, 3), (3, 9), (1, 27)],
        [(12, 3), (4, 9), (1, 27)],
        [(6, 9), (2, 27)],
        [(4, 27)],
    ],
    (9, 3): [[(9, 1), (3, 3), (1, 9)], [(5, 3), (1, 9)], [(3, 9)]],
    # Polyaxon gives 99 for the last rungs here; the last rung is always R.
    (100, 3): [
        [(81, 1), (27, 4), (9, 11), (3, 33), (1, 100)],
        [(34, 4), (11, 11), (3, 33), (1, 100)],
        [(15, 11), (5, 33), (1, 100)],
        [(8, 33), (2, 100)],
        [(5, 100)],
    ],
    # Polyaxon's float log gives s_max=4 here.
    (243, 3): [
        [(243, 1), (81, 3), (27, 9), (9, 27), (3, 81), (1, 243)],
        [(98, 3), (32, 9), (10, 27), (3, 81), (1, 243)],
        [(41, 9), (13, 27), (4, 81), (1, 243)],
        [(18, 27), (6, 81), (2, 243)],
        [(9, 81), (3, 243)],
        [(6, 243)],
    ],
    (1000, 10): [
        [(1000, 1), (100, 10), (10, 100), (1, 1000)],
        [(134, 10), (13, 100), (1, 1000)],
        [(20, 100), (2, 1000)],
        [(4, 1000)],
    ],
    # Polyaxon runs rung 0 with resource 0 here.
    (49, 7): [[(49, 1), (7, 7), (1, 49)], [(11, 7), (1, 49)], [(3, 49)]],
    (10, 2): [
        [(8, 1), (4, 3), (2, 5), (1, 10)],
        [(6, 3), (3, 5), (1, 10)],
        [(4, 5), (2, 10)],
        [(4, 10)],
    ],
    (1, 3): [[(1, 1)]],
    (200, 5): [
        [(125, 2), (25, 8), (5, 40), (1, 200)],
        [(34, 8), (6, 40), (1, 200)],
        [(10, 40), (2, 200)],
        [(4, 200)],
    ],
}


@pytest.mark.parametrize(("r", "eta"), sorted(TABLES))
def test_pinned_tables(r: int, eta: int) -> None:
    got = [[(g.configs, g.resource) for g in b.rungs] for b in brackets(r, eta)]
    assert got == TABLES[(r, eta)]


def test_729_3_has_no_zero_resource_and_seven_brackets() -> None:
    plan = brackets(729, 3)
    assert [b.s for b in plan] == [6, 5, 4, 3, 2, 1, 0]
    assert [(g.configs, g.resource) for g in plan[0].rungs] == [
        (729, 1),
        (243, 3),
        (81, 9),
        (27, 27),
        (9, 81),
        (3, 243),
        (1, 729),
    ]
    assert [b.rungs[0].configs for b in plan] == [729, 284, 114, 48, 21, 11, 7]


def test_81_3_totals() -> None:
    plan = brackets(81, 3)
    assert sum(b.trial_runs for b in plan) == 206
    # per bracket: 405, 363, 351, 378, 405
    assert sum(g.configs * g.resource for b in plan for g in b.rungs) == 1902


def test_float_resource_keeps_fractions() -> None:
    b = bracket(4, 100, 3, "float")
    assert [g.resource for g in b.rungs] == pytest.approx(
        [100 / 81, 100 / 27, 100 / 9, 100 / 3, 100]
    )
    assert b.rungs[-1].resource == 100.0


def test_fractional_eta_is_exact() -> None:
    # Polyaxon accepts eta=2.5 and gives 40 configs in the first bracket for R=81.
    plan = brackets(81, 2.5)
    assert plan[0].rungs[0].configs == 40
    assert plan[0].rungs[-1].exact_resource == Fraction(81)


def _check_invariants(r: int, eta: int) -> None:
    top = s_max(r, eta)
    assert eta**top <= r < eta ** (top + 1)
    plan = brackets(r, eta)
    assert [b.s for b in plan] == list(range(top, -1, -1))
    for b in plan:
        assert b.rungs[-1].resource == r
        sizes = [g.configs for g in b.rungs]
        assert all(n >= 1 for n in sizes)
        assert sizes == sorted(sizes, reverse=True)
        resources = [g.resource for g in b.rungs]
        assert all(isinstance(x, int) and x >= 1 for x in resources)
        assert resources == sorted(resources)


@pytest.mark.parametrize("eta", range(2, 11))
def test_invariants_for_every_small_r(eta: int) -> None:
    for r in range(1, 1500):
        _check_invariants(r, eta)


@pytest.mark.parametrize("eta", range(2, 11))
def test_invariants_at_every_power_boundary_up_to_a_million(eta: int) -> None:
    # s_max only changes at powers of eta, so the float traps live at p-1, p, p+1.
    p = eta
    while p <= 10**6:
        for r in (p - 1, p, p + 1):
            _check_invariants(r, eta)
        p *= eta
    _check_invariants(10**6, eta)


@given(st.integers(1, 10**6), st.integers(2, 10))
def test_invariants_random(r: int, eta: int) -> None:
    _check_invariants(r, eta)


@pytest.mark.parametrize(("r", "eta"), [(0, 3), (9, 1), (9, 0.5)])
def test_rejects_degenerate_inputs(r: int, eta: float) -> None:
    with pytest.raises(ValueError):
        s_max(r, eta)
