"""Polyaxon operations as users write them: component, params, templates, casting, rendering."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from hbd.core.component import split_command
from hbd.core.errors import SpecError
from hbd.core.iotypes import cast_value
from hbd.core.spec import parse_spec, spec_warnings
from hbd.core.templating import (
    ParamValue,
    TemplateError,
    expressions,
    render_argv,
    render_items,
)
from hbd.core.trialcommand import trial_command

BASE: dict[str, Any] = {
    "version": 1.1,
    "kind": "operation",
    "matrix": {
        "kind": "hyperband",
        "maxIterations": 9,
        "resource": {"name": "steps", "type": "int"},
        "metric": {"name": "loss"},
        "params": {"lr": {"kind": "choice", "value": [0.1, 0.01]}},
    },
    "component": {
        "version": 1.1,
        "kind": "component",
        "name": "train",
        "inputs": [{"name": "lr", "type": "float"}, {"name": "steps", "type": "int"}],
        "run": {
            "kind": "job",
            "container": {"command": ["train"], "args": ["--lr={{ lr }}", "--steps={{ steps }}"]},
        },
    },
}


def spec(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    for path, value in changes.items():
        *head, last = path.split("__")
        cur = d
        for h in head:
            cur = cur[h]
        cur[last] = value
    return d


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return [str(p) for p in info.value.problems]


def render(data: dict[str, Any], config: dict[str, Any], resource: int = 3) -> list[str]:
    s = parse_spec(data)
    return trial_command(s, config, resource, trial_id="sw-s1-r0-c4", bracket=1, rung=0).argv


# ---------------------------------------------------------------- the component


def test_run_kind_job_and_the_container_shorthand_mean_the_same() -> None:
    full = parse_spec(spec())
    short = copy.deepcopy(BASE)
    short["component"]["container"] = short["component"].pop("run")["container"]
    assert parse_spec(short).component == full.component
    assert parse_spec(full.to_json()) == full  # what the daemon stores reads back equal


@pytest.mark.parametrize("kind", ["service", "dag", "tfjob", "pytorchjob", "daskjob"])
def test_other_run_kinds_are_refused_with_the_reason(kind: str) -> None:
    (p,) = problems(spec(component__run__kind=kind))
    assert p.startswith(f"component.run.kind: run kind `{kind}` is not supported")
    assert "one process" in p


def test_run_and_container_together_are_refused() -> None:
    d = spec()
    d["component"]["container"] = {"command": ["x"]}
    assert any("not both" in p for p in problems(d))


def test_hub_url_and_dag_refs_are_refused_suggesting_path_ref() -> None:
    for key in ("hubRef", "urlRef", "dagRef"):
        d = spec()
        del d["component"]
        d[key] = "acme/train:1"
        (p,) = problems(d)
        assert p.startswith(f"{key}: ") and "pathRef" in p


def test_an_unresolved_path_ref_is_refused_by_the_core() -> None:
    d = spec()
    del d["component"]
    d["pathRef"] = "./c.yaml"
    (p,) = problems(d)
    assert "hbd validate/submit/run" in p and "inline the component" in p


def test_a_mistyped_key_gets_a_did_you_mean() -> None:
    d = spec()
    d["component"]["run"]["container"]["workdir"] = "/tmp"
    (p,) = problems(d)
    assert p == "component.run.container.workdir: unknown key `workdir`; did you mean `workingDir`?"


# ---------------------------------------------------------------- params


def test_operation_params_set_inputs_in_both_forms() -> None:
    d = spec(params={"epochs": {"value": 5}, "opt": "sgd"})
    d["component"]["inputs"] += [{"name": "epochs", "type": "int"}, {"name": "opt", "type": "str"}]
    d["component"]["run"]["container"]["args"] = ["{{ params.as_args }}"]
    assert render(d, {"lr": 0.1}) == ["train", "--epochs=5", "--opt=sgd", "--lr=0.1", "--steps=3"]


def test_operation_params_are_cast_and_checked() -> None:
    d = spec(params={"steps2": {"value": "7"}})
    d["component"]["inputs"].append({"name": "steps2", "type": "int"})
    assert parse_spec(d).fixed_params() == {"steps2": 7}
    d["params"] = {"steps2": {"value": 2.5}}
    (p,) = problems(d)
    assert p.startswith(
        "params.steps2.value: value 2.5 cannot be cast to input `steps2` of type int"
    )
    d["params"] = {"lr": {"value": 0.1}}  # also a matrix param
    assert any("also a matrix param" in p for p in problems(d))
    d["params"] = {"steps": {"value": 3}}  # the resource
    assert any("is the resource" in p for p in problems(d))


def test_input_defaults_and_optional_inputs() -> None:
    d = spec()
    d["component"]["inputs"] += [
        {"name": "bs", "type": "int", "isOptional": True, "value": 64},
        {"name": "seed", "type": "int", "isOptional": True},
    ]
    d["component"]["run"]["container"]["args"] = ["{{ params.as_args }}"]
    # The optional input without a value has no arg (Polyaxon's as_arg is empty).
    assert render(d, {"lr": 0.1}) == ["train", "--bs=64", "--lr=0.1", "--steps=3"]
    d["component"]["inputs"][2]["value"] = "many"
    assert any("`bs` of type int" in p for p in problems(d))


def test_undeclared_params_used_by_a_template_are_context_params_with_a_warning() -> None:
    d = spec()
    d["matrix"]["params"]["extra"] = {"kind": "choice", "value": [7]}
    assert any("did you mean" in p or "no template" in p for p in problems(d))
    d["component"]["run"]["container"]["args"].append("--extra={{ extra }}")
    s = parse_spec(d)
    assert any(w.startswith("matrix.params.extra: no component input") for w in spec_warnings(s))
    assert render(d, {"lr": 0.1, "extra": 7})[-1] == "--extra=7"


# ---------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("choice", [1.0, 2.0], {1, 2}),
        ("linspace", [16, 64, 4], {16, 32, 48, 64}),
        ("logspace", [1, 3, 3, 2], {2, 4, 8}),
        ("geomspace", [1, 1000, 4], {1, 10, 100, 1000}),
        ("qlognormal", [3, 0.5, 2], None),
        ("range", [0.0, 10.0, 2.5], None),  # 2.5 is refused
    ],
)
def test_int_inputs_receive_ints(kind: str, value: Any, expected: set[int] | None) -> None:
    d = spec()
    d["matrix"]["params"]["n"] = {"kind": kind, "value": value}
    d["component"]["inputs"].append({"name": "n", "type": "int"})
    d["component"]["run"]["container"]["args"].append("{{ n }}")
    if kind == "range":
        assert any("input `n` has type int" in p for p in problems(d))
        return
    from hbd.core.sweep import SweepMachine

    machine = SweepMachine.for_spec(parse_spec(d), sweep_id="sw", seed=1)
    from hbd.core.events import Begin, StartTrial

    starts = [x for x in machine.handle(Begin()) if isinstance(x, StartTrial)]
    values = {s.config["n"] for s in starts}
    assert all(type(v) is int for v in values), values
    if expected is not None:
        assert values <= expected


def test_values_that_cannot_be_cast_are_refused_naming_param_and_value() -> None:
    d = spec()
    d["matrix"]["params"]["n"] = {"kind": "linspace", "value": [1, 2, 5]}
    d["component"]["inputs"].append({"name": "n", "type": "int"})
    (p,) = problems(d)
    assert p == (
        "matrix.params.n: value 1.25 cannot be cast to input `n` of type int: not a whole number"
    )
    d["matrix"]["params"]["n"] = {"kind": "choice", "value": ["yes", "maybe"]}
    d["component"]["inputs"][-1]["type"] = "bool"
    (p,) = problems(d)
    assert "value 'maybe'" in p and "type bool" in p


@pytest.mark.parametrize(
    ("value", "io_type", "out"),
    [
        (3.0, "int", 3),
        ("5", "int", 5),
        (999.9999999999999, "int", 1000),
        (2, "float", 2.0),
        ("true", "bool", True),
        (0, "bool", False),
        (1, "str", "1"),
        (True, "str", "true"),
        ([1], "list", [1]),
        ("2020-01-01", "date", "2020-01-01"),
    ],
)
def test_cast_value(value: Any, io_type: str, out: Any) -> None:
    got = cast_value(value, io_type)
    assert got == out and type(got) is type(out)


@pytest.mark.parametrize(
    ("value", "io_type"),
    [(2.7, "int"), (True, "int"), ("x", "float"), (2, "bool"), ({}, "str"), (1, "dict")],
)
def test_cast_value_refuses(value: Any, io_type: str) -> None:
    with pytest.raises(ValueError):
        cast_value(value, io_type)


def test_pchoice_below_one_is_accepted_with_the_remainder_on_the_last_value() -> None:
    d = spec()
    d["matrix"]["params"]["act"] = {"kind": "pchoice", "value": [["relu", 0.1], ["tanh", 0.8]]}
    d["component"]["inputs"].append({"name": "act", "type": "str"})
    (w,) = [w for w in spec_warnings(parse_spec(d)) if "act" in w]
    assert "sum to 0.9" in w and "'tanh' takes the remainder (p=0.9)" in w


# ---------------------------------------------------------------- templates


def test_template_grammar() -> None:
    kinds = [e.kind for e in expressions("{{ a }}{{params.a.value}}{{ params.a.as_arg }}")]
    assert kinds == ["name", "value", "as_arg"]
    assert [e.kind for e in expressions("{{ params.as_args }} {{ globals.uuid }}")] == [
        "as_args",
        "global",
    ]
    for bad, words in [
        ("{{ lr | default(1) }}", "unsupported template"),
        ("{{ globals.project_name }}", "supported: run_uuid, uuid"),
        ("{% if x %}", "Jinja statements"),
        ("{{ inputs.lr }}", "unsupported template"),
    ]:
        with pytest.raises(TemplateError, match=re.escape(words)):
            expressions(bad)


def test_render_flags_arg_format_and_as_args() -> None:
    params = {
        "lr": ParamValue(0.1),
        "fast": ParamValue(True, is_flag=True),
        "slow": ParamValue(False, is_flag=True),
        "bs": ParamValue(64, arg_format="-b {{ bs }}"),
        "ctx": ParamValue("x", in_args=False),
    }
    argv = render_items(
        [
            "{{ params.as_args }}",
            "{{ slow }}",
            "{{ params.lr.as_arg }}",
            "run {{ params.as_args }}",
        ],
        params,
        {},
    )
    assert argv == [
        "--lr=0.1",
        "--fast",
        "-b 64",
        "--lr=0.1",
        "run --lr=0.1 --fast '-b 64'",
    ]


def test_globals_render_in_two_passes() -> None:
    d = spec()
    d["component"]["run"]["container"]["args"] = [
        "--id={{ globals.run_uuid }}",
        "--it={{ globals.iteration }}/{{ globals.bracket_iteration }}",
        "--out={{ globals.run_outputs_path }}/m",
    ]
    argv = render(d, {"lr": 0.1})
    # maxIterations 9, eta 3: s_max 2, so bracket 1 is iteration 1; rung 0.
    assert argv[1:] == ["--id=sw-s1-r0-c4", "--it=1/0", "--out={{ globals.run_outputs_path }}/m"]
    final = render_argv(argv, {}, {"run_outputs_path": "/w/trials/t"})
    assert final[-1] == "--out=/w/trials/t/m"
    with pytest.raises(TemplateError, match=r"globals\.run_outputs_path"):
        render_argv(argv, {})


def test_a_value_is_never_read_as_a_template() -> None:
    d = spec()
    d["matrix"]["params"]["name"] = {"kind": "choice", "value": ["{{ lr }}"]}
    d["component"]["inputs"].append({"name": "name", "type": "str"})
    assert any("values are never templates" in p for p in problems(d))


def test_executor_globals_are_refused_outside_argv() -> None:
    d = spec()
    d["component"]["run"]["container"]["env"] = {"OUT": "{{ globals.run_outputs_path }}"}
    assert any("known on the executor only" in p for p in problems(d))


def test_string_commands_split_like_a_shell_keeping_templates_whole() -> None:
    assert split_command("python3 -u train.py --name \"{{ run name }}\" --x={{ a  }} 'b c'") == [
        "python3",
        "-u",
        "train.py",
        "--name",
        "{{ run name }}",
        "--x={{ a  }}",
        "b c",
    ]
    d = spec()
    d["component"]["run"]["container"]["command"] = "train --q 'unclosed"
    assert any("cannot split like a shell" in p for p in problems(d))
    d["component"]["run"]["container"]["command"] = "train ; rm -rf /"
    assert render(d, {"lr": 0.1})[:4] == ["train", ";", "rm", "-rf"]  # no shell, literal words


# ---------------------------------------------------------------- container and termination


def test_env_working_dir_and_resources() -> None:
    d = spec()
    c = d["component"]["run"]["container"]
    c["env"] = [{"name": "A", "value": 1}, {"name": "LR", "value": "{{ lr }}"}]
    c["workingDir"] = "/srv/project"
    c["resources"] = {"limits": {"nvidia.com/gpu": 1, "cpu": "500m"}, "requests": {"memory": "4Gi"}}
    s = parse_spec(d)
    cmd = trial_command(s, {"lr": 0.5}, 3, trial_id="t", bracket=0, rung=0)
    assert cmd.env == {"A": "1", "LR": "0.5"}
    assert s.component.container.working_dir == "/srv/project"
    res = s.component.container.resources
    assert res is not None and res.limits == {"nvidia.com/gpu": "1", "cpu": "500m"}
    c["workingDir"] = "project"
    assert any("relative path needs the spec's folder" in p for p in problems(d))
    c["workingDir"] = "/srv"
    c["resources"] = {"limits": {"cpu": "lots"}}
    assert any("not a quantity" in p for p in problems(d))


def test_termination_merges_component_and_operation() -> None:
    d = spec()
    d["component"]["termination"] = {"timeout": 30, "maxRetries": 2}
    d["termination"] = {"timeout": 10}
    s = parse_spec(d)
    assert (s.timeout_seconds, s.max_retries) == (10.0, 2)


def test_a_timed_out_trial_run_is_retried_under_max_retries() -> None:
    # The agent fails a trial run past termination.timeout with reason "timeout";
    # maxRetries then starts it again, as for any other failure.
    from hbd.core.events import Begin, StartTrial, TrialFailed
    from tests.core.helpers import make_machine

    machine = make_machine(max_retries=1)
    first = next(d for d in machine.handle(Begin()) if isinstance(d, StartTrial))
    again = [d for d in machine.handle(TrialFailed(trial_id=first.trial_id, reason="timeout"))]
    retry = next(d for d in again if isinstance(d, StartTrial))
    assert retry.trial_id == first.trial_id + "-a1"
    assert (retry.config, retry.resource) == (first.config, first.resource)
    gave_up = machine.handle(TrialFailed(trial_id=retry.trial_id, reason="timeout"))
    assert not any(isinstance(d, StartTrial) and d.index == first.index for d in gave_up)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["component"]["inputs"].__setitem__(0, {"name": "lr", "type": "integer"}),
        lambda d: d["matrix"]["params"].__setitem__("lr", {"kind": "zzz", "value": [0, 1]}),
        lambda d: d["matrix"]["params"].__setitem__("lr", {"value": [0, 1]}),
        lambda d: d["matrix"]["params"].__setitem__("lr", {"kind": "uniform", "value": "x" * 500}),
        lambda d: d["matrix"]["params"].__setitem__(
            "z" * 300, {"kind": "uniform", "value": [0, 1]}
        ),
        lambda d: d["component"]["run"]["container"]["args"].append("{{ " + "y" * 300 + " }}"),
        lambda d: d["component"]["run"]["container"].__setitem__("env", {"A": 1, "B\nC": 2}),
        lambda d: d.__setitem__("tags", "t\n" * 300),
    ],
)
def test_every_problem_is_one_short_line(change: Any) -> None:
    d = spec()
    change(d)
    for p in problems(d):
        assert len(p) <= 160 and "\n" not in p, p


def test_did_you_mean_for_kinds_and_types() -> None:
    d = spec()
    d["matrix"]["params"]["lr"] = {"kind": "unifrom", "value": [0, 1]}
    d["component"]["inputs"][1]["type"] = "integer"
    assert problems(d) == [
        "matrix.params.lr: unknown kind 'unifrom'; did you mean `uniform`?",
        "component.inputs[1].type: unknown input type 'integer'; did you mean 'int'?",
    ]


def test_list_inputs_cast_each_item() -> None:
    d = spec(params={"sizes": {"value": ["16", 32.0]}})
    d["component"]["inputs"].append({"name": "sizes", "type": "int", "isList": True})
    assert parse_spec(d).fixed_params() == {"sizes": [16, 32]}
    d["params"] = {"sizes": {"value": 16}}
    assert any("not a list" in p for p in problems(d))
    d["params"] = {"sizes": {"value": [1, "{{ lr }}"]}}
    assert any("cannot be cast" in p for p in problems(d))


def test_an_operation_param_without_a_value_is_refused() -> None:
    d = spec(params={"bs": {}})
    d["component"]["inputs"].append({"name": "bs", "type": "int", "isOptional": True})
    assert problems(d) == ["params.bs: has no value; give `value: ...`"]


def test_to_env_options_and_arg_format_from_the_spec() -> None:
    d = spec(params={"opt": {"value": "adam", "toEnv": "OPTIMIZER"}})
    d["component"]["inputs"] += [
        {"name": "opt", "type": "str", "options": ["adam", "sgd"]},
        {"name": "bs", "type": "int", "value": 32, "toEnv": "BATCH", "argFormat": "-b={{ bs }}"},
    ]
    d["component"]["run"]["container"]["args"] = ["{{ params.bs.as_arg }}"]
    s = parse_spec(d)
    cmd = trial_command(s, {"lr": 0.1}, 3, trial_id="t", bracket=0, rung=0)
    assert cmd.env == {"OPTIMIZER": "adam", "BATCH": "32"}
    assert cmd.argv == ["train", "-b=32"]
    d["params"] = {"opt": {"value": "rmsprop"}}
    assert any("is not one of input `opt`'s options" in p for p in problems(d))
    d["params"] = {"opt": {"value": "sgd"}}
    d["matrix"]["params"]["opt2"] = {"kind": "uniform", "value": [0, 1]}
    d["component"]["inputs"].append({"name": "opt2", "type": "float", "options": [0.5]})
    assert any("use choice or pchoice over them" in p for p in problems(d))
