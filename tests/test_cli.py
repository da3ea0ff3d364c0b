"""The ``hbd`` command line: validate, plan, simulate; exit codes and messages."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hbd.cli import COMMANDS, build_parser, main
from hbd.core.errors import SpecError
from hbd.core.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
REFERENCE = EXAMPLES / "reference-fixed.yaml"
REFERENCE_ARG = os.path.relpath(REFERENCE)

_names = itertools.count()


@pytest.fixture(autouse=True)
def _forget_imported_objectives() -> Iterator[None]:
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("obj_", "objective", "_hbd_objective_")):
            del sys.modules[name]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_spec(tmp_path: Path, name: str = "spec.yaml", **matrix_changes: Any) -> Path:
    data = yaml.safe_load(REFERENCE.read_text())
    data["matrix"].update(matrix_changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_module(tmp_path: Path, body: str) -> str:
    name = f"obj_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return name


# ---------------------------------------------------------------- the parser


def test_every_registered_command_is_a_subcommand() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [c.name for c in COMMANDS]
    for command in COMMANDS:
        assert command.run.__name__ == f"cmd_{command.name}"


@pytest.mark.parametrize(
    "argv", [[], ["frobnicate"], ["validate"], ["simulate", "x.yaml"], ["plan", "--nope", "x"]]
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _output, err = run(capsys, *argv)
    assert code == 2
    assert "usage:" in err and "Traceback" not in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert all(c.name in out for c in COMMANDS)


# ---------------------------------------------------------------- validate

# The reference example keeps Polyaxon's `image`, which hbd accepts with this line.
IMAGE_WARNING = (
    "warning: component.run.container.image: not used on a host "
    "(hbd runs the command on the host, not in an image); ignored\n"
)


def test_validate_ok_prints_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", REFERENCE_ARG)
    assert code == 0
    assert out == (
        f"ok: {REFERENCE_ARG} — hyperband maxIterations=81 eta=3, 5 brackets, 206 trial runs, "
        "3 params (lr, dropout, activation); metric loss (minimize); resource num_steps (int)\n"
    )
    # The example keeps Polyaxon's `image`: accepted, with one line saying it is unused.
    assert err == IMAGE_WARNING


def test_validate_accepts_every_parameter_kind(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", str(EXAMPLES / "all-kinds.yaml"))
    assert code == 0, err
    assert "16 params" in out and "69 trial runs" in out


def test_validate_prints_warnings_on_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = yaml.safe_load(REFERENCE.read_text())
    data["matrix"]["params"]["lr"] = {"kind": "loguniform", "value": [0.001, 0.1]}
    path = tmp_path / "warn.yaml"
    path.write_text(yaml.safe_dump(data))
    code, out, err = run(capsys, "validate", str(path))
    assert code == 0
    assert out.startswith("ok: ")
    lines = err.splitlines()
    assert lines[1:] == [IMAGE_WARNING.rstrip("\n")]
    assert lines[0].startswith(
        "warning: matrix.params.lr: loguniform bounds are natural-log exponents"
    )


def test_validate_reports_every_problem_one_per_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = (
        REFERENCE.read_text()
        .replace("eta: 3", "eta: 1")
        .replace("maxIterations: 81", "maxIterations: 0")
    )
    text = text.replace("value: [0, 0.9]", "value: [0.9, 0]")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(text)
    problems = info.value.problems
    assert len(problems) >= 3

    code, out, err = run(capsys, "validate", str(path))
    assert code == 2
    assert out == ""
    assert err.splitlines() == [f"error: {path}: {p}" for p in problems]
    assert "Traceback" not in err


def test_validate_reports_yaml_syntax_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("matrix:\n  kind: hyperband\n   eta: 3\n")
    code, _output, err = run(capsys, "validate", str(path))
    assert code == 2
    assert len(err.splitlines()) == 1 and "YAML syntax error at line 3" in err


@pytest.mark.parametrize(
    "command", [["validate"], ["plan"], ["plan", "--json"], ["simulate", "--objective", "m:f"]]
)
def test_a_missing_file_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    code, out, err = run(capsys, command[0], str(missing), *command[1:])
    assert code == 2
    assert out == ""
    assert err == f"error: {missing}: no such file\n"


def test_unreadable_files_are_user_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    for path, message in ((tmp_path, "is a directory"), (binary, "not UTF-8 text")):
        code, _output, err = run(capsys, "validate", str(path))
        assert code == 2
        assert len(err.splitlines()) == 1 and message in err


def test_validate_reads_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("matrix: 3\n"))
    code, _output, err = run(capsys, "validate", "-")
    assert code == 2
    assert err.startswith("error: <stdin>: matrix:")


# ---------------------------------------------------------------- plan


@pytest.mark.parametrize(
    ("tuner", "lag", "order"),
    [
        (None, None, None),
        ({"hubRef": "bohb"}, 0, "ascending-after-first"),
        ({"hubRef": "bohb", "params": {"lag": 3, "order": "hyperband"}}, 3, "hyperband"),
    ],
)
def test_plan_shows_when_a_learning_sweep_opens_its_brackets(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tuner: Any,
    lag: int | None,
    order: str | None,
) -> None:
    path = write_spec(tmp_path, **({"tuner": tuner} if tuner else {}), iterations=2)
    code, out, _ = run(capsys, "plan", str(path), "--json")
    assert code == 0 and (json.loads(out)["lag"], json.loads(out)["order"]) == (lag, order)
    code, out, _ = run(capsys, "plan", str(path))
    assert code == 0 and (f"brackets open lazily, lag {lag}" in out) == (lag is not None)
    ascending = "brackets ascending after the first iteration" in out
    assert ascending == (order == "ascending-after-first")


def test_plan_json_gives_the_exact_geometry(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", REFERENCE_ARG, "--json")
    assert code == 0 and err == ""  # warnings are in the JSON
    plan = json.loads(out)
    assert (plan["max_iterations"], plan["eta"], plan["s_max"]) == (81, 3, 4)
    table = [
        (b["bracket"], [(r["configs"], r["resource"]) for r in b["rungs"]])
        for b in plan["brackets"]
    ]
    assert table == [
        (4, [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)]),
        (3, [(34, 3), (11, 9), (3, 27), (1, 81)]),
        (2, [(15, 9), (5, 27), (1, 81)]),
        (1, [(8, 27), (2, 81)]),
        (0, [(5, 81)]),
    ]
    assert [b["rungs"][0]["rung"] for b in plan["brackets"]] == [0] * 5
    assert [b["trial_runs"] for b in plan["brackets"]] == [121, 49, 21, 10, 5]
    assert [b["total_resource"] for b in plan["brackets"]] == [405, 363, 351, 378, 405]
    assert plan["total_trial_runs"] == 206
    assert plan["total_resource"] == 1902
    assert plan["params"] == {
        "lr": {"kind": "uniform", "range": "uniform [0, 0.9)"},
        "dropout": {"kind": "choice", "range": "choice of 2: 0.25, 0.3"},
        "activation": {"kind": "pchoice", "range": "pchoice of 2: relu (p=0.2), sigmoid (p=0.8)"},
    }
    assert plan["warnings"] == [IMAGE_WARNING.removeprefix("warning: ").rstrip("\n")]


def test_plan_json_float_resource_and_warnings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = yaml.safe_load(REFERENCE.read_text())
    data["matrix"].update(maxIterations=9, resource={"name": "num_steps", "type": "float"})
    data["matrix"]["params"]["lr"] = {"kind": "loguniform", "value": [0.001, 0.1]}
    data["component"]["inputs"][-1]["type"] = "float"
    path = tmp_path / "float.yaml"
    path.write_text(yaml.safe_dump(data))
    code, out, _ = run(capsys, "plan", str(path), "--json")
    assert code == 0
    plan = json.loads(out)
    assert [[r["resource"] for r in b["rungs"]] for b in plan["brackets"]] == [
        [1.0, 3.0, 9.0],
        [3.0, 9.0],
        [9.0],
    ]
    assert plan["total_resource"] == 9 * 1.0 + 3 * 3.0 + 9.0 + 5 * 3.0 + 9.0 + 3 * 9.0
    assert len(plan["warnings"]) == 2 and "natural-log exponents" in plan["warnings"][0]


def test_plan_tables(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", REFERENCE_ARG)
    assert code == 0 and err == IMAGE_WARNING
    for text in (
        "s_max=4",
        "81 x 1",
        "34 x 3",
        "5 x 81",
        "206",
        "1902",
        "uniform [0, 0.9)",
        "activation",
    ):
        assert text in out


# ---------------------------------------------------------------- simulate


def simulate_json(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    return run(capsys, "simulate", REFERENCE_ARG, "--objective", "objective:loss", "--json", *extra)


def test_simulate_json_is_byte_identical_across_runs(capsys: pytest.CaptureFixture[str]) -> None:
    first = simulate_json(capsys, "--seed", "4")
    second = simulate_json(capsys, "--seed", "4")
    assert first[0] == 0
    assert first == second
    data = json.loads(first[1])
    assert data["seed"] == 4 and data["seed_source"] == "--seed"


def test_simulate_json_matches_the_plan_and_finds_the_best(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, earlyStopping=[])
    code, out, err = run(
        capsys,
        "simulate",
        str(spec),
        "--objective",
        "objective:loss",
        "--json",
        "--path",
        str(EXAMPLES),
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["status"] == "succeeded" and data["reason"] == "all brackets completed"
    assert data["seed"] == 0 and data["seed_source"] == "default"
    assert len(data["trials"]) == 206
    succeeded = [t for t in data["trials"] if t["status"] == "succeeded"]
    best = min(succeeded, key=lambda t: t["metric"])
    assert data["best"]["metric"] == best["metric"]
    assert data["best"]["trial_id"] == best["id"]
    assert data["best"]["config"] == best["config"]
    assert (data["best"]["bracket"], data["best"]["rung"], data["best"]["resource"]) == (
        best["bracket"],
        best["rung"],
        best["resource"],
    )
    assert len(data["rungs"]) == 5 + 4 + 3 + 2 + 1  # every planned rung was decided
    assert sum(len(r["promoted"]) for r in data["rungs"]) == 206 - (81 + 34 + 15 + 8 + 5)


def test_simulate_seed_from_the_spec_and_another_seed_gives_other_configs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, seed=7)
    args = (
        "simulate",
        str(spec),
        "--objective",
        "objective:loss",
        "--json",
        "--path",
        str(EXAMPLES),
    )
    from_spec = json.loads(run(capsys, *args)[1])
    assert (from_spec["seed"], from_spec["seed_source"]) == (7, "spec")
    other = json.loads(run(capsys, *args, "--seed", "8")[1])
    assert [t["config"] for t in from_spec["trials"][:10]] != [
        t["config"] for t in other["trials"][:10]
    ]


def test_simulate_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "simulate", REFERENCE_ARG, "--objective", "objective:metrics", "--seed", "0"
    )
    assert code == 0, err
    assert "seed 0 (from --seed)" in out
    assert "Bracket s=4" in out and "Bracket s=0" in out
    assert "rung 0 -> 1: " in out and "and 24 more" in out
    assert "Best: loss=" in out and "config: lr=" in out
    assert "Sweep succeeded: early stopping: trial " in out
    assert "cancelled" in out


def test_simulate_finds_the_objective_beside_the_spec(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "sweep"
    work.mkdir()
    shutil.copy(REFERENCE, work / "spec.yaml")
    name = write_module(work, "def f(config, r):\n    return config['lr'] + 1 / r\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        capsys, "simulate", "sweep/spec.yaml", "--objective", f"{name}:f", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "succeeded"


def test_objective_output_does_not_corrupt_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name = write_module(
        tmp_path, "def f(config, r):\n    print('training...', r)\n    return 1 / r\n"
    )
    code, out, err = run(
        capsys,
        "simulate",
        REFERENCE_ARG,
        "--objective",
        f"{name}:f",
        "--json",
        "--path",
        str(tmp_path),
    )
    assert code == 0
    json.loads(out)
    assert "training... 1" in err


@pytest.mark.parametrize(
    ("source", "ref", "message"),
    [
        (None, "obj_not_there_zz:f", "error: no module named 'obj_not_there_zz'"),
        ("x = 1\n", "{name}:f", "error: objective module '{name}' has no attribute 'f'"),
        ("f = 'text'\n", "{name}:f", "error: objective '{name}:f' is a str, not a function"),
        (
            "1 / 0\n",
            "{name}:f",
            "error: importing objective module '{name}' failed: ZeroDivisionError: division by zero",
        ),
        (None, "justaname", "error: --objective must be MODULE:FUNCTION"),
    ],
)
def test_an_unusable_objective_is_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str | None, ref: str, message: str
) -> None:
    name = write_module(tmp_path, source) if source is not None else "unused"
    code, out, err = run(
        capsys,
        "simulate",
        REFERENCE_ARG,
        "--objective",
        ref.format(name=name),
        "--path",
        str(tmp_path),
    )
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith(message.format(name=name))


def test_a_raising_objective_fails_trials_not_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name = write_module(
        tmp_path,
        """
        def f(config, r):
            if config["activation"] == "sigmoid":
                raise ValueError("sigmoid is not supported")
            if config["lr"] > 0.8:
                return "diverged"
            return config["lr"] + 1 / r
        """,
    )
    code, out, err = run(
        capsys,
        "simulate",
        REFERENCE_ARG,
        "--objective",
        f"{name}:f",
        "--json",
        "--path",
        str(tmp_path),
    )
    assert code == 0, err
    data = json.loads(out)
    reasons = {t["reason"] for t in data["trials"] if t["status"] == "failed"}
    assert reasons == {
        "objective raised ValueError: sigmoid is not supported",
        "objective returned str 'diverged'; expected a number (the 'loss') or a dict of metrics",
    }
    code, out, err = run(
        capsys, "simulate", REFERENCE_ARG, "--objective", f"{name}:f", "--path", str(tmp_path)
    )
    assert code == 0
    assert "objective raised ValueError: sigmoid is not supported (" in out
    assert "Traceback" not in out + err


def test_a_sweep_where_everything_fails_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name = write_module(tmp_path, "def f(config, r):\n    raise RuntimeError('out of memory')\n")
    code, out, err = run(
        capsys, "simulate", REFERENCE_ARG, "--objective", f"{name}:f", "--path", str(tmp_path)
    )
    assert code == 1
    # stopped by the first-failures rule, not after all 143 planned runs
    assert "Sweep failed: early stopping: the first 10 trial runs all failed" in out
    assert "objective raised RuntimeError: out of memory (10 trials, first sim-s4-r0-c0)" in out
    assert "Traceback" not in out + err


# ---------------------------------------------------------------- daemon commands' exit codes


def test_run_on_a_database_of_a_newer_hbd_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import sqlite3

    db = tmp_path / "newer.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 999")
    code, out, err = run(capsys, "run", REFERENCE_ARG, "--db", str(db))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "schema version 999" in err
    assert "Traceback" not in out + err and "ExceptionGroup" not in err


@pytest.mark.parametrize("bad", ["ünïcode", "a.b", "x" * 65, ""])
def test_submit_refuses_a_bad_sweep_id_before_any_request(
    capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    # Port 9 (discard): were a request sent, this would fail differently (exit 1).
    code, out, err = run(
        capsys, "submit", REFERENCE_ARG, "--id", bad, "--url", "http://127.0.0.1:9"
    )
    assert code == 2
    assert err.startswith("error: --id: invalid sweep id") and err.count("\n") == 1, err
    assert out == ""


def test_an_unreachable_daemon_is_exit_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "status", "--url", "http://127.0.0.1:9")
    assert code == 1
    assert err.startswith("error: cannot reach the hbd daemon") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("status", "exit_code"), [(400, 2), (401, 2), (404, 2), (422, 2), (500, 1), (503, 1), (None, 1)]
)
def test_client_errors_map_to_the_exit_code_of_whose_fault_it_was(
    status: int | None, exit_code: int
) -> None:
    from hbd.cli.base import RemoteFailure, UserError
    from hbd.cli.remote import cli_error
    from hbd.client import ClientError

    mapped = cli_error(ClientError("what happened", status=status))
    assert isinstance(mapped, UserError if exit_code == 2 else RemoteFailure)
    assert str(mapped) == "what happened"


# ---------------------------------------------------------------- the real entry point


def test_python_dash_m_hbd(tmp_path: Path) -> None:
    def hbd(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hbd", *argv],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )

    ok = hbd("validate", "examples/reference-fixed.yaml")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(
        "ok: examples/reference-fixed.yaml — hyperband maxIterations=81 eta=3"
    )

    missing = hbd("plan", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert missing.stderr == f"error: {tmp_path / 'nope.yaml'}: no such file\n"

    a = hbd(
        "simulate",
        "examples/reference-fixed.yaml",
        "--objective",
        "objective:loss",
        "--json",
        "--seed",
        "1",
    )
    b = hbd(
        "simulate",
        "examples/reference-fixed.yaml",
        "--objective",
        "objective:loss",
        "--json",
        "--seed",
        "1",
    )
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert json.loads(a.stdout)["seed"] == 1
    assert "Traceback" not in ok.stderr + missing.stderr + a.stderr
