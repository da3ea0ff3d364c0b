"""The agent's retention and log-cap settings: defaults, parsing, and agreement with the agent."""

from __future__ import annotations

import pytest

from hbd import settings
from hbd.errors import ConfigError
from hbd.executor import agent
from hbd.settings import ExecutorSettings


def test_the_settings_defaults_are_the_agents() -> None:
    assert settings.DEFAULT_RETAIN_SECONDS == agent.DEFAULT_RETAIN_SECONDS
    assert settings.DEFAULT_RETAIN_TRIALS == agent.DEFAULT_RETAIN_TRIALS
    assert settings.DEFAULT_LOG_CAP_BYTES == agent.DEFAULT_LOG_CAP_BYTES
    assert settings.MIN_LOG_CAP_BYTES == agent.MIN_LOG_CAP_BYTES
    s = ExecutorSettings.load()
    assert s.retain == 7 * 86400 and s.retain_trials == 10_000 and s.log_cap_bytes == 64 << 20


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800.0), ("36h", 129600.0), ("90m", 5400.0), ("30s", 30.0), ("12", 12.0)],
)
def test_retain_takes_a_duration(text: str, seconds: float) -> None:
    assert ExecutorSettings.load(overrides={"retain": text}).retain == seconds


@pytest.mark.parametrize(
    ("key", "value"),
    [("retain", "soon"), ("retain", "-1d"), ("log_cap_bytes", 100), ("retain_trials", -1)],
)
def test_bad_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        ExecutorSettings.load(overrides={key: value})


def test_retention_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HBD_EXECUTOR_RETAIN", "2h")
    monkeypatch.setenv("HBD_EXECUTOR_LOG_CAP_BYTES", "8192")
    s = ExecutorSettings.load()
    assert s.retain == 7200.0 and s.log_cap_bytes == 8192
