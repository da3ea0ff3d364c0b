"""Commands that need no daemon: validate, plan and simulate a spec."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import TYPE_CHECKING

from hbd.cli.base import (
    EXIT_FAILURE,
    EXIT_OK,
    MAX_CONFIGS_SHOWN,
    MAX_FAILURES_SHOWN,
    Command,
    UserError,
    format_config,
    format_number,
    output,
    print_json,
    read_spec,
    say,
    spec_dir,
    warn,
)
from hbd.core.vocabulary import TrialStatus

if TYPE_CHECKING:  # imported where used: `hbd --help` must not load pydantic, numpy or rich
    from hbd.planview import Plan, PlanBracket
    from hbd.simulate import Simulation, TrialOutcome


def _args_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the sweep spec (YAML); - reads stdin")


def _summary(path: str, plan: Plan) -> str:
    names = ", ".join(p.name for p in plan.params)
    return (
        f"ok: {path} — hyperband maxIterations={plan.max_iterations} eta={format_number(plan.eta)}, "
        f"{len(plan.brackets)} brackets, {plan.total_trial_runs} trial runs, "
        f"{len(plan.params)} params ({names}); metric {plan.metric} ({plan.direction}); "
        f"resource {plan.resource_name} ({plan.resource_type})"
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from hbd.planview import build_plan

    spec = read_spec(args.file)
    plan = build_plan(spec)
    say(_summary(args.file, plan))
    for w in plan.warnings:
        warn(w)
    for w in command_problems(list(spec.component.container.command), spec_dir(args.file)):
        warn(w)
    return EXIT_OK


def command_problems(command: list[str], spec_folder: str) -> list[str]:
    """Whether the trial command can start here: a bare name must be on PATH (or
    beside the spec); a relative path is resolved against the spec's folder, not
    the current directory. A warning, not an error: executors on other hosts
    have their own PATH, but a typo here fails every trial run (exit 127)."""
    import shutil
    from pathlib import Path

    if not command or "{{" in command[0]:
        return []  # templated: known only when a trial starts
    program = command[0]
    folder = Path(spec_folder)
    where = "container.command[0]"
    if "/" in program:
        # Relative to the spec's folder first; trials start in the executor's
        # working directory, so a path that works from here is fine too.
        candidates = [Path(program)] if Path(program).is_absolute() else [folder / program]
        candidates.append(Path(program))
        path = next((c for c in candidates if c.exists()), candidates[0])
        if not path.exists():
            return [f"{where}: {program}: no such file (looked at {path})"]
        if path.is_dir() or not os.access(path, os.X_OK):
            return [f"{where}: {path} is not an executable file (chmod +x?)"]
        return []
    if shutil.which(program) is not None:
        return []
    beside = folder / program
    if beside.is_file() and os.access(beside, os.X_OK):
        return [
            f"{where}: {program!r} is not on PATH but is beside the spec; "
            f"write its path ({beside}) so that trials find it"
        ]
    return [
        f"{where}: command {program!r} not found on PATH or in {folder}: every trial "
        "run would fail (exit 127) unless the executor's host has it"
    ]


# ---------------------------------------------------------------- plan


def _args_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the sweep spec (YAML); - reads stdin")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def _print_plan(path: str, plan: Plan) -> None:
    from rich.table import Table
    from rich.text import Text

    out = output()
    res = plan.resource_name
    out.line(
        f"Hyperband plan for {path}: maxIterations={plan.max_iterations}, eta={format_number(plan.eta)}, "
        f"s_max={plan.s_max}; resource {res} ({plan.resource_type}); "
        f"metric {plan.metric} ({plan.direction})"
    )
    out.line(
        f"search: {plan.tuner} sampling, {plan.promotion} promotion"
        + (f" (stragglers {plan.stragglers})" if plan.stragglers else "")
        + f", {plan.iterations} Hyperband iteration{'s' if plan.iterations != 1 else ''}"
        + ("" if plan.lag is None else f"; brackets open lazily, lag {plan.lag}")
        + (
            "; brackets ascending after the first iteration"
            if plan.order == "ascending-after-first" and plan.iterations > 1
            else ""
        )
    )
    table = Table(
        title=f"Brackets: configs x {res} per rung",
        caption=f"runs: trial runs; total: {res} summed over them",
        title_justify="left",
    )
    table.add_column("bracket", justify="right", no_wrap=True)
    for i in range(plan.s_max + 1):
        table.add_column(f"rung {i}", justify="right", no_wrap=True)
    table.add_column("runs", justify="right", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    for b in plan.brackets:
        cells = [f"{r.configs} x {format_number(r.resource)}" for r in b.rungs]
        cells += [""] * (plan.s_max + 1 - len(cells))
        table.add_row(f"s={b.bracket}", *cells, str(b.trial_runs), format_number(b.total_resource))
    table.add_section()
    table.add_row(
        "total" if plan.iterations == 1 else f"total x{plan.iterations}",
        *[""] * (plan.s_max + 1),
        str(plan.total_trial_runs),
        format_number(plan.total_resource),
    )
    out.table(table)

    params = Table(title="Parameters", title_justify="left")
    params.add_column("name")
    params.add_column("effective range")  # begins with the kind
    for p in plan.params:
        params.add_row(Text(p.name), Text(p.range))
    out.table(params)
    for w in plan.warnings:
        warn(w)


def cmd_plan(args: argparse.Namespace) -> int:
    from hbd.planview import build_plan

    plan = build_plan(read_spec(args.file))
    if args.json:
        print_json(plan.to_json())
    else:
        _print_plan(args.file, plan)
    return EXIT_OK


# ---------------------------------------------------------------- simulate


def _args_simulate(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the sweep spec (YAML); - reads stdin")
    p.add_argument(
        "--objective",
        required=True,
        metavar="MODULE:FUNCTION",
        help="f(config: dict, resource) -> float | dict[str, float]; a float is the spec's metric "
        "(MODULE may also be a path/to/file.py)",
    )
    p.add_argument(
        "--seed", type=int, help="sampling seed (default: the spec's matrix.seed, else 0)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="DIR",
        help="directory to import the objective from (repeatable); searched before "
        "the current directory and the spec file's directory",
    )


_SEED_SOURCES = {
    "--seed": "from --seed",
    "spec": "from the spec's matrix.seed",
    "default": "default; no --seed or matrix.seed",
}


def _short_id(trial_id: str) -> str:
    return trial_id.rsplit("-", 1)[-1]  # "sim-s4-r0-c12" -> "c12": the config index


_STATUS_WORDS = {
    TrialStatus.SUCCEEDED: "ok",
    TrialStatus.FAILED: "failed",
    TrialStatus.CANCELLED: "cancelled",
}


def _run_order(plan: Plan, iteration: int) -> tuple[PlanBracket, ...]:
    """The brackets of ``iteration`` in the order they run (scheduler.Opening.brackets)."""
    if plan.order == "ascending-after-first" and iteration > 0:
        return tuple(reversed(plan.brackets))
    return plan.brackets


def _print_simulation(path: str, objective: str, sim: Simulation, plan: Plan) -> None:
    from rich.table import Table

    out = output()
    out.line(
        f"Simulating {path} with {objective}, seed {sim.seed} ({_SEED_SOURCES[sim.seed_source]})"
    )
    by_rung: dict[tuple[int, int, int], list[TrialOutcome]] = {}
    for t in sim.trials:
        by_rung.setdefault((t.iteration, t.bracket, t.rung), []).append(t)
    decided = {(r.iteration, r.bracket, r.rung): r for r in sim.rungs}
    trials = {t.trial_id: t for t in sim.trials}
    res = plan.resource_name

    for it, b in ((i, b) for i in range(plan.iterations) for b in _run_order(plan, i)):
        out.line("")
        where = f"Iteration {it}, bracket" if plan.iterations > 1 else "Bracket"
        table = Table(
            title=f"{where} s={b.bracket}: {b.rungs[0].configs} configs from {res}={format_number(b.rungs[0].resource)}",
            title_justify="left",
        )
        table.add_column("rung", justify="right")
        table.add_column(res, justify="right")
        table.add_column("ran", justify="right")
        table.add_column("results")
        table.add_column("promoted", justify="right")
        table.add_column(f"cutoff {sim.metric}", justify="right")
        table.add_column(f"best {sim.metric}", justify="right")
        notes: list[str] = []
        for planned in b.rungs:
            key = (it, b.bracket, planned.rung)
            ran = by_rung.get(key, [])
            row = [
                str(planned.rung),
                format_number(planned.resource),
                f"{len(ran)}/{planned.configs}",
            ]
            if not ran:
                table.add_row(*row, "not run", "", "", "")
                continue
            counts = {s: sum(t.status == s for t in ran) for s in _STATUS_WORDS}
            results = ", ".join(f"{n} {_STATUS_WORDS[s]}" for s, n in counts.items() if n)
            metrics = [t.metric for t in ran if t.metric is not None]
            best = (min if sim.direction == "minimize" else max)(metrics) if metrics else None
            rung = decided.get(key)
            if rung is None:
                table.add_row(*row, results, "-", "-", format_number(best))
                notes.append(f"  rung {planned.rung}: not decided, the sweep stopped first")
                continue
            promoted = "-" if planned.rung == b.bracket else str(len(rung.promoted))
            table.add_row(*row, results, promoted, format_number(rung.cutoff), format_number(best))
            if rung.promoted:
                shown = [
                    f"{_short_id(tid)} ({format_config(trials[tid].config)})"
                    for tid in rung.promoted[:MAX_CONFIGS_SHOWN]
                ]
                more = len(rung.promoted) - MAX_CONFIGS_SHOWN
                notes.append(
                    f"  rung {planned.rung} -> {planned.rung + 1}: "
                    + ", ".join(shown)
                    + (f" and {more} more" if more > 0 else "")
                )
            elif planned.rung != b.bracket:
                notes.append(f"  rung {planned.rung}: {rung.reason}")
        out.table(table)
        for note in notes:
            out.line(note)

    out.line("")
    failed = [t for t in sim.trials if t.status == TrialStatus.FAILED]
    if failed:
        reasons: dict[str, list[str]] = {}  # reason -> trial ids, in first-seen order
        for t in failed:
            reasons.setdefault(t.reason or "failed", []).append(t.trial_id)
        out.line(f"{len(failed)} trial(s) failed:")
        for reason, ids in list(reasons.items())[:MAX_FAILURES_SHOWN]:
            who = ids[0] if len(ids) == 1 else f"{len(ids)} trials, first {ids[0]}"
            out.line(f"  {reason} ({who})")
        if len(reasons) > MAX_FAILURES_SHOWN:
            out.line(
                f"  ... and {len(reasons) - MAX_FAILURES_SHOWN} other reasons (--json lists every trial)"
            )
    counts = {s: sum(t.status == s for t in sim.trials) for s in _STATUS_WORDS}
    out.line(
        f"Trials: {len(sim.trials)} of {plan.total_trial_runs} planned "
        f"({', '.join(f'{n} {s}' for s, n in counts.items())})"
    )
    if sim.best is None:
        out.line(f"Best: none (no trial reported {sim.metric})")
    else:
        top = sim.best
        out.line(
            f"Best: {sim.metric}={format_number(top.metric)} ({sim.direction}), trial {top.trial_id}, "
            f"bracket {top.bracket}, rung {top.rung}, {plan.resource_name}={format_number(top.resource)}"
        )
        out.line(f"  config: {format_config(top.config)}")
    out.line(f"Sweep {sim.status}: {sim.reason}")


def cmd_simulate(args: argparse.Namespace) -> int:
    from hbd.planview import build_plan
    from hbd.simulate import ObjectiveError, load_objective, objective_path, resolve_seed, simulate

    spec = read_spec(args.file)
    seed, source = resolve_seed(args.seed, spec)
    search = [*args.path, os.getcwd(), spec_dir(args.file)]
    with objective_path(search):  # kept for the run too: the objective may import lazily
        try:
            objective = load_objective(args.objective, search)
        except ObjectiveError as exc:
            raise UserError(str(exc)) from None
        # Whatever the objective prints must not mix with our output (or break --json).
        with contextlib.redirect_stdout(sys.stderr):
            sim = simulate(spec, objective, seed=seed, seed_source=source)
    if args.json:
        print_json(sim.to_json())
    else:
        _print_simulation(args.file, args.objective, sim, build_plan(spec))
    return EXIT_FAILURE if sim.status == "failed" else EXIT_OK


COMMANDS: tuple[Command, ...] = (
    Command("validate", "check a sweep spec and summarise it", _args_validate, cmd_validate),
    Command(
        "plan", "show the brackets, rungs and parameter ranges a spec gives", _args_plan, cmd_plan
    ),
    Command(
        "simulate",
        "run a whole sweep in-process against a Python objective",
        _args_simulate,
        cmd_simulate,
    ),
)
