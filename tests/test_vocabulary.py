"""One vocabulary: every event type and status is a member of an enum in hbd.core.vocabulary."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import typing
from pathlib import Path

import pytest

import hbd.core.events as core_events
import hbd.protocol
from hbd.core.vocabulary import (
    FINAL_SWEEP_STATUSES,
    TERMINAL_EVENT_TYPES,
    TERMINAL_TRIAL_STATUSES,
    EventType,
    SweepStatus,
    TrialStatus,
    sql_list,
)
from hbd.store import schema

WEB_APP_JS = Path(hbd.core.events.__file__).parents[1] / "web" / "static" / "app.js"
# SHA-256 of every migration statement of schema v1..v3 as released (joined by
# NUL): databases in the field were built by exactly this text, so generating
# the SQL from the enums must reproduce it byte for byte.
RELEASED_MIGRATIONS_SHA256 = "5c53fa214f5da76559d39efd1d565fe22a62f1b83418b64867ae5b8201b67971"


def test_the_generated_schema_is_the_released_text() -> None:
    text = "\x00".join(s for migration in schema.MIGRATIONS[:3] for s in migration)
    assert hashlib.sha256(text.encode()).hexdigest() == RELEASED_MIGRATIONS_SHA256


def test_sql_lists_keep_the_enum_order() -> None:
    assert schema.TERMINAL_SQL == "('succeeded','failed','cancelled')"
    assert sql_list([SweepStatus.FAILED, SweepStatus.RUNNING]) == "('running','failed')"


def test_every_core_event_class_is_typed_with_a_member() -> None:
    classes = [
        c
        for c in vars(core_events).values()
        if dataclasses.is_dataclass(c) and isinstance(c, type) and hasattr(c, "TYPE")
    ]
    assert len(classes) >= 10
    assert all(isinstance(c.TYPE, EventType) for c in classes)


def test_the_machines_final_statuses_are_the_vocabularys() -> None:
    assert set(typing.get_args(core_events.SweepStatus)) == FINAL_SWEEP_STATUSES


def test_an_agents_trial_states_are_daemon_trial_statuses() -> None:
    states = set(typing.get_args(hbd.protocol.AgentTrialState))
    assert states <= set(TrialStatus)
    assert hbd.protocol.TERMINAL_STATES == TERMINAL_TRIAL_STATUSES


def test_terminal_events_end_in_terminal_statuses() -> None:
    assert set(TERMINAL_EVENT_TYPES.values()) == TERMINAL_TRIAL_STATUSES
    assert all(t.removeprefix("trial.") == s for t, s in TERMINAL_EVENT_TYPES.items())


def test_members_are_their_strings() -> None:
    # A member goes into JSON, SQL parameters and dict lookups as its string.
    assert EventType.TRIAL_FAILED == "trial.failed"
    assert {"trial.failed": 1}[EventType.TRIAL_FAILED] == 1
    assert f"{TrialStatus.RUNNING}" == "running"


@pytest.mark.parametrize("const", ["EVENT_TYPES", "ENDED", "STATUS_FILL"])
def test_the_web_page_speaks_the_vocabulary(const: str) -> None:
    # The page is JavaScript and cannot import the enums: its lists are checked here.
    source = WEB_APP_JS.read_text()
    match = re.search(rf"const {const} = (.*?);\n", source, re.S)
    assert match is not None
    words = set(re.findall(r'"([a-z_.]+)"', match.group(1))) | set(
        re.findall(r"\b([a-z_]+):", match.group(1))
    )
    assert words
    known = set(EventType) | set(TrialStatus) | set(SweepStatus)
    assert words - known == set()


def test_the_daemon_logs_every_type_of_the_vocabulary_but_the_machines_own() -> None:
    from hbd.daemon.lifecycle import EVENT_TYPES

    assert set(EVENT_TYPES) == set(EventType) - {EventType.SWEEP_BEGIN}


def test_the_cli_filters_by_the_statuses_the_api_accepts() -> None:
    import argparse

    from hbd.api.routes import TRIAL_STATUSES
    from hbd.cli.sweeps import _args_trials

    parser = argparse.ArgumentParser(exit_on_error=False)
    _args_trials(parser)
    assert TRIAL_STATUSES == tuple(TrialStatus)
    for status in TRIAL_STATUSES:  # `hbd trials --status interrupted` was once refused
        assert parser.parse_args(["SWEEP", "--status", status]).status == status
