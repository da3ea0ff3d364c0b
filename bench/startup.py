"""Start-up time of the short commands, against the interpreter's own.

`hbd --help` and `hbd validate` are what a user types most and waits on
before anything happens; issue 15 asks for "well under 0.3 s". Each command is
a fresh interpreter (as from a shell), timed wall-clock over N runs
interleaved with the baseline `python -c pass` in the same run, so that a
busy machine slows all of them alike and the ratios stay meaningful.

    .venv/bin/python bench/startup.py [--runs 20] [--no-bytecode] [--against DIR]

Prints the wall-clock median and minimum of each, its median over the
baseline's, and the median CPU time (user + system), which a busy machine
disturbs less than wall-clock time.
By default bytecode caches are used (written by a warm-up run), as an
installed package has them; ``--no-bytecode`` measures with
PYTHONDONTWRITEBYTECODE=1 and no caches for hbd's own modules, the worst case
of a source checkout on a read-only or cache-less file system.
``--against DIR`` also times both hbd commands from another source tree (say
``git archive main | tar -x -C DIR``), imported first through PYTHONPATH and
interleaved with these, to compare a change with its base on the same load.
On a shared machine wall-clock figures drift with load; count instructions to
compare (``valgrind --tool=callgrind`` on each command, PYTHONHASHSEED=0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sgd.yaml"

# The console script, as users run it (python -m hbd if it is not installed).
HBD = [str(Path(sys.executable).with_name("hbd"))]
if not Path(HBD[0]).exists():
    HBD = [sys.executable, "-m", "hbd"]

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "hbd --help": [*HBD, "--help"],
    "hbd validate": [*HBD, "validate", str(SPEC)],
}
BASELINE = "python -c pass"


def _env(bytecode: bool, tree: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    if tree is not None:
        env["PYTHONPATH"] = tree  # ahead of the editable install's finder
    return env


# The hbd commands run from another tree (--against): the module, not the console
# script, whose import of hbd would find this checkout first.
_MODULE_MAIN = "import sys; from hbd.cli import main; sys.exit(main(sys.argv[1:]))"


def _drop_caches() -> None:
    for cache in (ROOT / "hbd").rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


def _once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one run of ``argv``."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.returncode != 0:
        raise SystemExit(f"{argv}: exit {proc.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    parser.add_argument(
        "--no-bytecode", action="store_true", help="without bytecode caches for hbd's modules"
    )
    parser.add_argument("--against", metavar="DIR", help="also time hbd from this source tree")
    args = parser.parse_args()
    env = _env(bytecode=not args.no_bytecode)
    runs: dict[str, tuple[list[str], dict[str, str]]] = {
        name: (argv, env) for name, argv in COMMANDS.items()
    }
    if args.against:
        other = _env(bytecode=not args.no_bytecode, tree=str(Path(args.against).resolve()))
        main = [sys.executable, "-c", _MODULE_MAIN]
        runs["--against --help"] = ([*main, "--help"], other)
        runs["--against validate"] = ([*main, "validate", str(SPEC)], other)
    if args.no_bytecode:
        _drop_caches()
    for argv, run_env in runs.values():  # warm-up: file-system caches, and .pyc files when allowed
        _once(argv, run_env)
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.runs):
        for name, (argv, run_env) in runs.items():  # interleaved: load changes hit all alike
            w, c = _once(argv, run_env)
            wall[name].append(w)
            cpu[name].append(c)
    base = statistics.median(wall[BASELINE])
    mode = "without bytecode caches" if args.no_bytecode else "with bytecode caches"
    print(f"{args.runs} runs each, {mode}, {sys.executable}; seconds")
    print(
        f"{'command':<20} {'wall median':>12} {'wall min':>9} {'/baseline':>10} {'cpu median':>11}"
    )
    for name in runs:
        median = statistics.median(wall[name])
        print(
            f"{name:<20} {median:12.3f} {min(wall[name]):9.3f} {median / base:9.1f}x "
            f"{statistics.median(cpu[name]):11.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
