"""Hyperband's arithmetic, exactly (Li et al. 2018, JMLR, Algorithm 1 and Table 1).

Everything is computed with integers and ``Fraction`` so that no float ``log``
or truncation can shift a bracket or a resource (Polyaxon's code gives
s_max=4 for R=243, eta=3, and a last rung of 99 for R=100; see
``polyaxon-semantics.md`` §1). For maxIterations R and eta:

- s_max is the largest s with eta**s <= R;
- bracket s starts n = ceil((s_max + 1) / (s + 1) * eta**s) configurations;
- rung i of bracket s keeps n_i = floor(n * eta**-i) configurations at
  resource r_i = R * eta**(i - s), so the last rung (i = s) gets exactly R.

An integer resource is rounded to nearest (halves up) and never below 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

ResourceType = Literal["int", "float"]


@dataclass(frozen=True, slots=True)
class Rung:
    index: int
    configs: int
    resource: int | float
    exact_resource: Fraction


@dataclass(frozen=True, slots=True)
class Bracket:
    """One bracket (s) of Hyperband: its rungs, most configurations first."""

    s: int
    rungs: tuple[Rung, ...]

    @property
    def trial_runs(self) -> int:
        return sum(r.configs for r in self.rungs)


def as_fraction(value: float | Fraction) -> Fraction:
    # str() keeps a float spelled 2.5 in YAML as exactly 5/2, not its binary approximation.
    return value if isinstance(value, Fraction) else Fraction(str(value))


def s_max(max_iterations: int, eta: float | Fraction) -> int:
    r, e = Fraction(max_iterations), as_fraction(eta)
    if max_iterations < 1 or e <= 1:
        raise ValueError("geometry needs maxIterations >= 1 and eta > 1")
    s, power = 0, e
    while power <= r:
        s, power = s + 1, power * e
    return s


def ceil_fraction(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


def floor_fraction(x: Fraction) -> int:
    return x.numerator // x.denominator


def cast_resource(exact: Fraction, resource_type: ResourceType) -> int | float:
    if resource_type == "float":
        return float(exact)
    return max(1, floor_fraction(exact + Fraction(1, 2)))


def bracket(
    s: int, max_iterations: int, eta: float | Fraction, resource_type: ResourceType = "int"
) -> Bracket:
    top = s_max(max_iterations, eta)
    if not 0 <= s <= top:
        raise ValueError(f"bracket {s} is outside 0..{top}")
    e, r = as_fraction(eta), Fraction(max_iterations)
    n = ceil_fraction(Fraction(top + 1, s + 1) * e**s)
    rungs = []
    for i in range(s + 1):
        exact = r * e ** (i - s)
        configs = floor_fraction(n / e**i)
        rungs.append(Rung(i, configs, cast_resource(exact, resource_type), exact))
    return Bracket(s, tuple(rungs))


def brackets(
    max_iterations: int, eta: float | Fraction, resource_type: ResourceType = "int"
) -> tuple[Bracket, ...]:
    """All brackets in Hyperband's order: s_max (most exploratory) down to 0."""
    top = s_max(max_iterations, eta)
    return tuple(bracket(s, max_iterations, eta, resource_type) for s in range(top, -1, -1))
