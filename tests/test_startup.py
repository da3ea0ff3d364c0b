"""Start-up of the short commands: what `hbd validate` loads, and the lazy
pieces that keep it fast give the same answers as the eager ones."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from hbd.cli import COMMAND_MODULES, COMMANDS, build_parser
from hbd.core.params import Param, ParamOfKind

ROOT = Path(__file__).resolve().parent.parent
# Libraries `hbd validate` has no use for: the server, the client, sampling,
# logging and the database.
NOT_FOR_VALIDATE = ("fastapi", "uvicorn", "starlette", "httpx", "numpy", "structlog", "aiosqlite")


def test_validate_loads_no_server_client_sampling_logging_or_database_library() -> None:
    probe = (
        "import sys\nfrom hbd.cli import main\n"
        "assert main(['validate', 'examples/sgd.yaml']) == 0\n"
        f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & {set(NOT_FOR_VALIDATE)!r}))\n"
        "print('KINDS', sorted(k for k, m in __import__('hbd.core.params').core.params"
        ".KIND_MODELS.items() if m.__pydantic_complete__))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "LOADED []" in done.stdout, done.stdout + done.stderr
    # Only the kinds examples/sgd.yaml uses were built.
    assert "KINDS ['choice', 'loguniform', 'pchoice']" in done.stdout, done.stdout


def test_every_command_is_in_the_table_of_command_modules() -> None:
    defined = {
        c.name: m
        for m in set(COMMAND_MODULES.values())
        for c in importlib.import_module(f"hbd.cli.{m}").COMMANDS
    }
    assert defined == COMMAND_MODULES
    assert [c.name for c in COMMANDS] == list(COMMAND_MODULES)


@pytest.mark.parametrize("name", list(COMMAND_MODULES))
def test_a_commands_own_parser_is_the_full_parsers_branch(name: str) -> None:
    full = build_parser()._subparsers._group_actions[0].choices[name]  # type: ignore[union-attr]
    alone = build_parser([name])._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert list(alone) == [name]
    assert alone[name].format_help() == full.format_help()


BAD_PARAMS: list[Any] = [
    5,
    "x",
    None,
    [],
    [1, 2],
    {},
    {"value": [0, 1]},
    {1: 2},
    {"kind": None, "value": [0, 1]},
    {"kind": 5, "value": [0, 1]},
    {"kind": ["uniform"], "value": [0, 1]},
    {"kind": "unifrom", "value": [0, 1]},
    {"kind": "uniform"},
    {"kind": "uniform", "value": [1, 0]},
    {"kind": "uniform", "value": [0, 1], "extra": 1},
    {"kind": "normal", "value": {"loc": 0, "scael": 1}},
    {"kind": "range", "value": "1:10:0"},
    {"kind": "choice", "value": []},
    {"kind": "datetimerange", "value": ["2020-01-02T00:00", "2020-01-01T00:00", 60]},
]


def _errors(adapter: TypeAdapter[Any], v: object) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        adapter.validate_python(v)
    out = info.value.errors(include_url=False)
    for e in out:
        # The union names the kind in the location (`uniform.value`); the
        # spec's paths drop that step (hbd.core.spec._clean_loc), so compare without it.
        e["loc"] = tuple(x for x in e["loc"] if not (isinstance(v, dict) and x == v.get("kind")))
        if e["type"] == "value_error":
            del e["ctx"]  # the exception object itself: equal only to itself
    return out


@pytest.mark.parametrize("value", BAD_PARAMS, ids=repr)
def test_a_param_validated_by_its_kind_fails_exactly_as_the_union_does(value: Any) -> None:
    assert _errors(TypeAdapter(ParamOfKind), value) == _errors(TypeAdapter(Param), value)


@pytest.mark.parametrize(
    "value",
    [
        {"kind": "uniform", "value": [0, 1]},
        {"kind": "choice", "value": [1, "a"]},
        {"kind": "range", "value": "1:10:2"},
        {"kind": "daterange", "value": ["2020-01-01", "2020-02-01", 7]},
    ],
    ids=repr,
)
def test_a_param_validated_by_its_kind_equals_the_unions(value: Any) -> None:
    assert TypeAdapter(ParamOfKind).validate_python(value) == TypeAdapter(Param).validate_python(
        value
    )
