"""Start-up of the short commands: what `hbd validate` loads, and the lazy
pieces that keep it fast give the same answers as the eager ones."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import TypeAdapter, ValidationError

from hbd.cli import COMMAND_MODULES, COMMANDS, build_parser
from hbd.core.params import Param, ParamOfKind, kind_model

ROOT = Path(__file__).resolve().parent.parent
# Libraries `hbd validate` has no use for: the server, the client, sampling,
# logging and the database.
NOT_FOR_VALIDATE = ("fastapi", "uvicorn", "starlette", "httpx", "numpy", "structlog", "aiosqlite")


# hbd's own modules `hbd validate examples/sgd.yaml` has no use for: the
# samplers, and the families of parameter kinds that spec does not use (it has
# choice, pchoice and loguniform). Each would cost start-up time (issue 15).
NOT_FOR_SGD = (
    "hbd.core.tpe",
    "hbd.core.sampler",
    "hbd.core.search",
    "hbd.core.kinds.grid",
    "hbd.core.kinds.normal",
    "hbd.core.kinds.dates",
)


def test_validate_loads_no_server_client_sampling_logging_or_database_library() -> None:
    probe = (
        "import sys\nfrom hbd.cli import main\n"
        "assert main(['validate', 'examples/sgd.yaml']) == 0\n"
        f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & {set(NOT_FOR_VALIDATE)!r}))\n"
        f"print('OWN', sorted(set(sys.modules) & {set(NOT_FOR_SGD)!r}))\n"
        "print('KINDS', sorted(k for k, m in __import__('hbd.core.params').core.params"
        ".KIND_MODELS.items() if m.__pydantic_complete__))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "LOADED []" in done.stdout, done.stdout + done.stderr
    assert "OWN []" in done.stdout, done.stdout
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


def test_the_class_table_names_every_class_of_every_family() -> None:
    from hbd.core.params import _CLASS_FAMILIES, KIND_CLASSES, KIND_FAMILIES, PARAM_KINDS

    assert set(KIND_FAMILIES) == set(KIND_CLASSES) == PARAM_KINDS
    families = set(KIND_FAMILIES.values())
    defined = {
        name: family
        for family in families
        for name in importlib.import_module(f"hbd.core.kinds.{family}").__all__
    }
    assert defined == _CLASS_FAMILIES
    for kind in KIND_FAMILIES:
        model = kind_model(kind)
        assert model.__name__ == KIND_CLASSES[kind]
        assert model.model_fields["kind"].annotation == Literal[kind]  # type: ignore[valid-type]


def test_a_kinds_class_imported_by_name_is_its_model() -> None:
    from hbd.core import params
    from hbd.core.kinds.grid import RangeParam, RangeValue

    assert params.RangeParam is RangeParam is kind_model("range")
    assert params.RangeValue is RangeValue
    with pytest.raises(AttributeError):
        params.NoSuchParam  # noqa: B018


def test_a_spec_without_path_ref_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import hbd.core.spec
    from hbd.cli.base import read_spec_text

    calls: list[str] = []
    real = hbd.core.spec.load_yaml

    def counting(text: str, *args: Any) -> object:
        calls.append(text)
        return real(text, *args)

    monkeypatch.setattr(hbd.core.spec, "load_yaml", counting)
    text, spec = read_spec_text(str(ROOT / "examples" / "sgd.yaml"))
    assert len(calls) == 1
    assert spec == hbd.core.spec.load_spec(text)


def _tuner_errors(tp: Any, v: object) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        TypeAdapter(tp).validate_python(v)
    return info.value.errors(include_url=False)


BAD_TUNER_PARAMS: list[Any] = [
    5,
    "x",
    [],
    {"topNPercent": 0},
    {"top_n_percent": 100, "numSamples": -1},
    {"randomFraction": float("nan")},
    {"bandwidthFactor": "wide", "extra": 1},
    {"lag": True},
    {"lag": 65},
]


@pytest.mark.parametrize("value", BAD_TUNER_PARAMS, ids=repr)
def test_tuner_params_fail_exactly_as_a_field_of_bohb_params_does(value: Any) -> None:
    # The spec validates tuner.params by calling BOHBParams (so that reading a
    # spec does not import the sampler); the errors must be the model field's.
    from hbd.core.spec import TunerParams
    from hbd.core.tunerparams import BOHBParams

    assert _tuner_errors(TunerParams, value) == _tuner_errors(BOHBParams | None, value)


@pytest.mark.parametrize(
    "value", [None, {}, {"topNPercent": 20, "multivariate": False, "lag": 2}], ids=repr
)
def test_tuner_params_validate_and_dump_as_a_field_of_bohb_params_does(value: Any) -> None:
    from hbd.core.spec import TunerParams
    from hbd.core.tunerparams import BOHBParams

    ours = TypeAdapter(TunerParams).validate_python(value)
    theirs = TypeAdapter(BOHBParams | None).validate_python(value)
    assert ours == theirs
    dump = {"mode": "json", "by_alias": True, "exclude_none": True}
    assert TypeAdapter(TunerParams).dump_python(ours, **dump) == TypeAdapter(
        BOHBParams | None
    ).dump_python(theirs, **dump)
