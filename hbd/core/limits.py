"""Limits on what one spec may ask of the service, and the arithmetic that checks them.

Every number here bounds work or memory that untrusted input (a submitted
spec) could otherwise make unbounded: issue 10 reproduced a daemon killed by
``maxIterations: 1e12`` (two trillion trial runs planned in memory), a 10**9
leaf YAML anchor bomb and 100,000-deep JSON. The defaults are generous for
real sweeps; an operator tunes them in the daemon's settings
(``max_trial_runs``, ``max_spec_bytes``; see docs/operations.md "Limits").

Checks are arithmetic: the number of trial runs of a plan is summed from the
Hyperband formulas (``geometry``) without building a single bracket or trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from hbd.core import geometry
from hbd.core.errors import SpecProblem

__all__ = [
    "DEFAULT_MAX_TRIAL_RUNS",
    "DEFAULT_SPEC_LIMITS",
    "MAX_CONCURRENCY",
    "MAX_HYPERBAND_ITERATIONS",
    "MAX_NAME_CHARS",
    "MAX_OPENING_LAG",
    "MAX_SPEC_ALIASES",
    "MAX_SPEC_BYTES",
    "MAX_SPEC_DEPTH",
    "MAX_SPEC_NODES",
    "MAX_SQL_INT",
    "MAX_STRAGGLERS",
    "MIN_SQL_INT",
    "SpecLimits",
    "nul_problems",
    "planned_trial_runs",
    "trial_runs_problem",
]

# SQLite stores integers as signed 64 bits; a larger seed, resource or
# maxIterations would fail the insert (a 500) instead of being refused.
MAX_SQL_INT = 2**63 - 1
MIN_SQL_INT = -(2**63)
# `concurrency` above any plan's size means "no limit"; this only refuses
# absurd values (1e30 was accepted) before they reach a capacity limiter.
MAX_CONCURRENCY = 1_000_000
# A sweep's `name` is stored in the sweeps table, sent with every listing and
# replayed in its first event; a name is a label, not a document (a 900 KB
# name took a daemon to 2.9 GB over SSE replays).
MAX_NAME_CHARS = 256
# Hyperband iterations of one sweep (matrix.iterations, and after every
# `hbd extend`): the total trial runs are capped by max_trial_runs anyway; this
# bounds the scheduler's bracket list (one entry per bracket and iteration)
# before a plan's size is even computed. Li et al. run a handful; BOHB's
# benchmarks 4 to 64.
MAX_HYPERBAND_ITERATIONS = 1_000
# BOHB's `matrix.tuner.params.lag` (scheduler.Opening): how many bracket
# positions a bracket's history lags behind it. 64 positions are a whole
# iteration of the largest plan (s_max <= 63): past that every bracket opens
# without waiting for anything of the iteration before, and learns only less.
MAX_OPENING_LAG = 64
# `matrix.stragglers` (asynchronous promotion): how many trials still running a
# rung's last promotions may leave behind. A rung of more trials than this is
# decided from fewer than one result in 1,000; past it the rule only gets
# blinder (a trial that ends first goes on).
MAX_STRAGGLERS = 1_000
# Trial runs one sweep may plan (all brackets, all rungs; retries not counted).
# Each is a log row, a queue entry and an executor process: 100,000 is weeks
# of work on any host hbd targets, and its plan (a few MB) is built in a second.
# Li et al.'s largest experiment (R=81·10, eta=3) plans under 2,000.
DEFAULT_MAX_TRIAL_RUNS = 100_000
# Spec text, in UTF-8 bytes. Real operation files are a few KB; this also
# bounds the `spec` stored in the log and replayed to every event stream.
MAX_SPEC_BYTES = 256 * 1024
# Nesting of mappings and sequences. A Polyaxon file nests about 8 levels;
# PyYAML's composer recurses about three Python frames per level, so 64 stays
# far below the interpreter's recursion limit (5,000 levels gave a 500).
MAX_SPEC_DEPTH = 64
# YAML aliases (`*name`) in one spec. Anchors are a convenience for repeated
# blocks; a thousand uses is far past any hand-written file, and an anchor
# bomb needs only a few dozen.
MAX_SPEC_ALIASES = 1_000
# Nodes of the document with every alias expanded (what pydantic, json and
# the log would walk). A 256 KB spec written out has at most ~100,000 nodes;
# ten times that leaves room for anchors and refuses 10**9-leaf bombs at once.
MAX_SPEC_NODES = 1_000_000
# Characters of all scalars with every alias expanded: the size of the parsed
# spec as stored and replayed. Four times the text limit leaves room for anchors.
MAX_SPEC_EXPANDED_CHARS = 4 * MAX_SPEC_BYTES


@dataclass(frozen=True, slots=True)
class SpecLimits:
    """The bounds one spec is checked against (the daemon's come from its settings)."""

    max_trial_runs: int = DEFAULT_MAX_TRIAL_RUNS
    max_bytes: int = MAX_SPEC_BYTES
    max_depth: int = MAX_SPEC_DEPTH
    max_aliases: int = MAX_SPEC_ALIASES
    max_nodes: int = MAX_SPEC_NODES
    max_expanded_chars: int = MAX_SPEC_EXPANDED_CHARS


DEFAULT_SPEC_LIMITS = SpecLimits()


def planned_trial_runs(max_iterations: int, eta: float | Fraction) -> int:
    """Trial runs of the whole plan, from the formulas alone (no bracket is built).

    Costs O(s_max**2) integer operations, s_max <= log2(maxIterations) <= 63.
    """
    top = geometry.s_max(max_iterations, eta)
    e = geometry.as_fraction(eta)
    total = 0
    for s in range(top, -1, -1):
        n = geometry.ceil_fraction(Fraction(top + 1, s + 1) * e**s)
        for i in range(s + 1):
            total += geometry.floor_fraction(n / e**i)
    return total


def trial_runs_problem(
    max_iterations: int, eta: float | Fraction, limit: int, iterations: int = 1
) -> SpecProblem | None:
    """Why a plan (``iterations`` times over) is too large for ``limit`` trial runs, or None."""
    runs = planned_trial_runs(max_iterations, eta) * iterations
    if runs <= limit:
        return None
    times = f" times {iterations} iterations" if iterations > 1 else ""
    return SpecProblem(
        "matrix.iterations" if iterations > 1 else "matrix.maxIterations",
        f"maxIterations {max_iterations} with eta {eta:g}{times} plans {runs:,} trial runs, "
        f"more than the limit of {limit:,} per sweep (setting max_trial_runs); "
        + (
            "lower iterations or maxIterations, or raise eta"
            if iterations > 1
            else "lower maxIterations or raise eta"
        ),
    )


def _path(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def nul_problems(data: object) -> list[SpecProblem]:
    """Every string (key or value) holding a NUL character, by its dotted path.

    A NUL cannot be part of an argv element or an environment value (execve
    stops at it): the agent would fail to start the trial, so it is refused
    here, naming the field. ``data`` is already bounded (see hbd.core.loader).
    """
    problems: list[SpecProblem] = []

    def walk(value: object, parts: list[str | int]) -> None:
        if isinstance(value, str):
            if "\x00" in value:
                problems.append(SpecProblem(_path(parts), "contains a NUL character (\\x00)"))
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and "\x00" in k:
                    shown = k[:40].encode("unicode_escape").decode("ascii")
                    problems.append(
                        SpecProblem(_path(parts), f"key `{shown}` contains a NUL character")
                    )
                    continue
                walk(v, [*parts, str(k)])
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, [*parts, i])

    walk(data, [])
    return problems
