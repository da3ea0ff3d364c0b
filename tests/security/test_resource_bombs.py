"""Specs built to exhaust the daemon are refused in one readable line, quickly (issue 10.7-10.8).

Each hostile spec is refused by ``load_spec`` (what ``hbd validate``, ``hbd plan``
and a submit all use) with a problem that names the field or the limit, without
building what it asks for; a live daemon refuses it with 422 while its
``/healthz`` keeps answering within a second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hbd import settings
from hbd.api.sse import FRAME_CACHE_BYTES, FrameCache
from hbd.cli import main
from hbd.core import geometry, limits
from hbd.core.errors import SpecError
from hbd.core.limits import (
    DEFAULT_MAX_TRIAL_RUNS,
    MAX_SPEC_BYTES,
    MAX_SPEC_DEPTH,
    SpecLimits,
    planned_trial_runs,
)
from hbd.core.spec import load_spec
from hbd.daemon.runner import MAX_REASON_CHARS, MAX_STDERR_TAIL_CHARS, observation_from_status
from hbd.protocol import TrialStatus
from hbd.store.log import StoredEvent, open_store
from tests.e2e.conftest import sweep_yaml
from tests.security.conftest import Live, while_healthy

# Refusing any of these takes milliseconds; seconds would mean it was built.
REFUSE_WITHIN = 5.0
# /healthz while a sweep at the limit is accepted and queued (see its test).
ACCEPT_DEADLINE = 3.0


def spec_text(tmp: Path = Path("/tmp/hbd-unused.jsonl"), **matrix: Any) -> str:
    data = yaml.safe_load(sweep_yaml(tmp))
    data["matrix"].update(matrix)
    return json.dumps(data)


def anchor_bomb(levels: int = 9) -> str:
    """9 levels of 9 aliases: 9**9 (~3.9e8) leaves in a few hundred bytes."""
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghijklmn"[: levels - 1]:
        text += f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
        prev = name
    return text


def problems_of(text: str, lim: SpecLimits = limits.DEFAULT_SPEC_LIMITS) -> list[str]:
    start = time.monotonic()
    with pytest.raises(SpecError) as caught:
        load_spec(text, limits=lim)
    assert time.monotonic() - start < REFUSE_WITHIN
    return [str(p) for p in caught.value.problems]


HOSTILE = {
    "anchor bomb": (anchor_bomb(), "expands to more than"),
    "deep JSON": ("[" * 100_000 + "]" * 100_000, f"nests deeper than {MAX_SPEC_DEPTH}"),
    "deep JSON object": ('{"a":' * 5_000 + "1" + "}" * 5_000, "nests deeper than"),
    "deep YAML": ("".join("  " * i + "-\n" for i in range(200)), "nests deeper than"),
    "recursive alias": ("a: &a [*a]\n", "recursive YAML alias"),
    "too many aliases": (
        "a: &a 1\nb: [" + ", ".join(["*a"] * (limits.MAX_SPEC_ALIASES + 1)) + "]\n",
        "more than 1000 YAML aliases",
    ),
    "huge text": ("x: " + "a" * (MAX_SPEC_BYTES + 1), "setting max_spec_bytes"),
    "5,000-digit integer": ("x: " + "9" * 5_000, "unreadable YAML value"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_text_is_refused_in_one_line_naming_the_limit(name: str) -> None:
    text, reason = HOSTILE[name]
    problems = problems_of(text)
    assert len(problems) == 1
    assert reason in problems[0]
    assert "\n" not in problems[0]


def test_aliases_chained_into_depth_are_refused_without_recursing() -> None:
    # Each anchor nests the previous one 50 levels deeper: shallow as written,
    # 50 * 30 levels once expanded.
    text, prev = "", None
    for i in range(30):
        inner = f"*a{prev}" if prev is not None else "1"
        text += f"k{i}: &a{i} " + "[" * 50 + inner + "]" * 50 + "\n"
        prev = i
    assert "nests deeper than" in problems_of(text)[0]


def test_anchors_within_the_limits_still_work() -> None:
    text = sweep_yaml(Path("/tmp/x.jsonl")).replace(
        "metric:", "metric: &m", 1
    )  # an anchor nobody uses is harmless
    assert load_spec(text).matrix.metric.name == "loss"


# ---------------------------------------------------------------- trial runs


@pytest.mark.parametrize(("r", "eta"), [(1, 2), (9, 3), (81, 3), (243, 3), (100, 2.5), (10**5, 7)])
def test_planned_trial_runs_agrees_with_the_plan(r: int, eta: float) -> None:
    assert planned_trial_runs(r, eta) == sum(b.trial_runs for b in geometry.brackets(r, eta))


def test_a_plan_over_the_trial_run_limit_is_refused_with_its_size() -> None:
    problems = problems_of(spec_text(maxIterations=10**12, eta=2))
    assert problems == [
        "matrix.maxIterations: maxIterations 1000000000000 with eta 2 plans 2,258,648,153,163 "
        f"trial runs, more than the limit of {DEFAULT_MAX_TRIAL_RUNS:,} per sweep "
        "(setting max_trial_runs); lower maxIterations or raise eta"
    ]


def test_the_trial_run_limit_is_the_one_given() -> None:
    text = spec_text(maxIterations=81, eta=3)  # 206 trial runs
    assert load_spec(text, limits=SpecLimits(max_trial_runs=206))
    assert "plans 206 trial runs" in problems_of(text, SpecLimits(max_trial_runs=205))[0]


@pytest.mark.parametrize(
    ("matrix", "loc"),
    [
        ({"maxIterations": 10**400}, "matrix.maxIterations"),
        ({"maxIterations": 2**63}, "matrix.maxIterations"),
        ({"seed": 2**63}, "matrix.seed"),
        ({"seed": -(2**63) - 1}, "matrix.seed"),
        ({"concurrency": 1e30}, "matrix.concurrency"),
        ({"metric": {"name": ""}}, "matrix.metric.name"),
        ({"resource": {"name": "", "type": "int"}}, "matrix.resource.name"),
    ],
)
def test_numbers_beyond_sqlite_and_empty_names_are_refused_naming_the_field(
    matrix: dict[str, Any], loc: str
) -> None:
    problems = problems_of(spec_text(**matrix))
    assert any(p.startswith(loc + ":") for p in problems), problems


@pytest.mark.parametrize("command", [[], [""], ["  "]])
def test_an_empty_command_is_refused(command: list[str]) -> None:
    data = json.loads(spec_text())
    data["component"]["container"]["command"] = command
    problems = problems_of(json.dumps(data))
    assert any(p.startswith("component.container.command") for p in problems), problems


@pytest.mark.parametrize(
    ("where", "loc"),
    [
        (("component", "container", "command", 0), "component.container.command[0]"),
        (("component", "container", "args", 1), "component.container.args[1]"),
        (("component", "inputs", 2, "value"), "component.inputs[2].value"),
    ],
)
def test_a_nul_byte_is_refused_naming_the_field(where: tuple[Any, ...], loc: str) -> None:
    data = json.loads(spec_text())
    holder = data
    for step in where[:-1]:
        holder = holder[step]
    holder[where[-1]] = "py\x00thon"
    problems = problems_of(json.dumps(data))
    assert f"{loc}: contains a NUL character (\\x00)" in problems


def test_a_nul_byte_in_a_choice_value_is_refused() -> None:
    problems = problems_of(spec_text(params={"x": {"kind": "choice", "value": [0.1, "a\x00b"]}}))
    assert "matrix.params.x.value[1]: contains a NUL character (\\x00)" in problems


def test_a_long_name_is_refused() -> None:
    data = json.loads(spec_text())
    data["name"] = "n" * (limits.MAX_NAME_CHARS + 1)
    assert any(p.startswith("name:") for p in problems_of(json.dumps(data)))


def test_settings_repeat_the_core_defaults() -> None:
    assert settings.DEFAULT_MAX_TRIAL_RUNS == limits.DEFAULT_MAX_TRIAL_RUNS
    assert settings.DEFAULT_MAX_SPEC_BYTES == limits.MAX_SPEC_BYTES


def test_validate_and_plan_refuse_a_huge_plan_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "huge.json"
    path.write_text(spec_text(maxIterations=10**12, eta=2))
    for command in ("validate", "plan"):
        start = time.monotonic()
        assert main([command, str(path)]) == 2
        assert time.monotonic() - start < REFUSE_WITHIN
        err = capsys.readouterr().err
        assert "2,258,648,153,163 trial runs" in err
        assert "Traceback" not in err


# ---------------------------------------------------------------- a live daemon


@pytest.mark.anyio
@pytest.mark.parametrize(
    "name", ["anchor bomb", "deep JSON", "recursive alias", "huge plan", "5,000-digit integer"]
)
async def test_a_live_daemon_refuses_a_bomb_and_stays_responsive(live: Live, name: str) -> None:
    text = spec_text(maxIterations=10**12, eta=2) if name == "huge plan" else HOSTILE[name][0]
    response, _ = await while_healthy(live.http, live.http.post("/v1/sweeps", content=text))
    assert response.status_code == 422
    assert "Traceback" not in response.text
    assert response.json()["errors"]
    assert (await live.http.get("/v1/sweeps")).json() == []  # nothing was stored


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.alone  # the API's latency while two cores plan: not with another test's load
async def test_a_sweep_near_the_limit_starts_without_blocking_the_api(live: Live) -> None:
    # 71,176 trial runs, 28,659 of them in the first rungs: seconds of planning.
    text = spec_text(maxIterations=20_000, eta=2, concurrency=1)
    assert planned_trial_runs(20_000, 2) <= DEFAULT_MAX_TRIAL_RUNS
    # Accepting it is real work (28,659 log rows in one commit; the dispatcher
    # queues them all) that shares two cores with the API: a looser bound than a
    # refusal's. Done on the event loop, it blocked the API for 5 s unloaded.
    response, _ = await while_healthy(
        live.http, live.http.post("/v1/sweeps", content=text), deadline=ACCEPT_DEADLINE
    )
    assert response.status_code == 201


# ---------------------------------------------------------------- what streams and rows hold


def big_event(seq: int, size: int) -> StoredEvent:
    return StoredEvent(
        seq=seq,
        sweep_id="sw1",
        type="sweep.submitted",
        trial_id=None,
        payload={"x": "a" * size},
        at=0.0,
    )


def test_the_frame_cache_is_bounded_in_bytes_not_only_in_events() -> None:
    cache = FrameCache()
    for seq in range(1, 200):
        cache.frame(big_event(seq, 512 * 1024))  # 100 MB of frames asked for
        cache.chunk([big_event(seq, 512 * 1024)])
    assert 0 < cache.bytes <= FRAME_CACHE_BYTES


@pytest.mark.anyio
async def test_a_replay_page_is_bounded_in_bytes(tmp_path: Path) -> None:
    async with await open_store(tmp_path / "hbd.db") as store:
        payload = {"name": "", "spec": "s" * 100_000, "spec_json": {}, "seed": 1}
        for i in range(10):
            await store.append(f"sw{i}", [("sweep.submitted", payload)], at=0.0)
        page, more = await store.read_page(0, limit=500, max_bytes=250_000)
        assert [e.seq for e in page] == [1, 2] and more
        page, more = await store.read_page(0, limit=500, max_bytes=10)
        assert [e.seq for e in page] == [1] and more  # always at least one
        page, more = await store.read_page(8, limit=500, max_bytes=250_000)
        assert [e.seq for e in page] == [9, 10] and not more


def test_a_status_cannot_put_unbounded_text_in_the_log() -> None:
    status = TrialStatus(
        id="t1",
        sweep_id="sw1",
        state="failed",
        reason="r" * 10**6,
        stderr_tail="e" * 10**6,
        started_at=0.0,
    )
    observed = observation_from_status(status, "loss")
    assert observed is not None
    assert len(observed.observation.reason) < MAX_REASON_CHARS + 100  # type: ignore[union-attr]
    tail = observed.extra["stderr_tail"]
    assert len(tail) < MAX_STDERR_TAIL_CHARS + 100 and tail.endswith("e")


def test_an_integer_too_large_for_a_float_input_is_refused_not_a_crash() -> None:
    # float(10**400) raises OverflowError: once a 500 on submit and a traceback in validate.
    data = json.loads(spec_text())
    data["component"]["inputs"].append({"name": "big", "type": "float", "value": 10**400})
    problems = problems_of(json.dumps(data))
    assert any("too large for a float" in p for p in problems), problems
