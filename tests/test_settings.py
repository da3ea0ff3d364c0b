"""Settings: precedence of the sources, and one clear error per bad value."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hbd.cli import main
from hbd.errors import ConfigError
from hbd.settings import DaemonSettings, ExecutorSettings, is_loopback

TOKEN = "t0ken-for-tests-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("HBD_") or name in ("STATE_DIRECTORY", "NOTIFY_SOCKET"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def toml(tmp_path: Path, text: str, name: str = "hbd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_any_file() -> None:
    s = DaemonSettings.load()
    assert (s.host, s.port, s.local_executor, s.executors) == ("127.0.0.1", 8765, 0, [])
    assert s.token is None
    assert s.db.name == "hbd.db" and "xdg" in str(s.db)
    assert set(s.origins.values()) <= {"default", "none"}


def test_state_directory_wins_for_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/hbd")
    assert DaemonSettings.load().db == Path("/var/lib/hbd/hbd.db")


def test_precedence_cli_over_env_over_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = toml(
        tmp_path, 'port = 9001\nhost = "127.0.0.2"\nlog_level = "warning"\nlocal_executor = 2\n'
    )
    monkeypatch.setenv("HBD_PORT", "9002")
    monkeypatch.setenv("HBD_HOST", "127.0.0.3")
    s = DaemonSettings.load(
        config=path, overrides={"port": 9003, "host": None}, flags={"port": "--port"}
    )
    assert s.port == 9003 and s.origins["port"] == "--port"
    assert s.host == "127.0.0.3" and s.origins["host"] == "HBD_HOST"
    assert s.log_level == "warning" and s.origins["log_level"] == str(path)
    assert s.local_executor == 2
    assert s.lost_after == 60.0 and s.origins["lost_after"] == "default"


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HBD_CONFIG", str(toml(tmp_path, "port = 9100\n")))
    assert DaemonSettings.load().port == 9100


def test_executor_settings_have_their_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HBD_PORT", "9000")  # the daemon's, not the agent's
    monkeypatch.setenv("HBD_EXECUTOR_SLOTS", "3")
    s = ExecutorSettings.load()
    assert (s.port, s.slots) == (8766, 3)


def test_executors_list_from_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HBD_EXECUTORS", '["http://gpu1:8766/", "https://gpu2:8766"]')
    assert DaemonSettings.load().executors == ["http://gpu1:8766", "https://gpu2:8766"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port = 70000\n", "port: Input should be less than or equal to 65535 (from {path})"),
        ("prot = 1\n", "prot: not a setting (from {path})"),
        ('token = "abc"\n', "token: not a setting (the token is never a config key"),
        (
            'log_level = "loud"\n',
            "log_level: Input should be 'debug', 'info', 'warning' or 'error'",
        ),
        ('executors = ["ftp://x"]\n', "executors: entry 0: 'ftp://x' is not an executor URL"),
        ("local_executor = -1\n", "local_executor: Input should be greater than or equal to 0"),
        ("port = \n", "{path}: not valid TOML"),
    ],
)
def test_bad_file_values_name_the_key_and_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        DaemonSettings.load(config=path)
    assert expected.format(path=path) in str(info.value)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HBD_PORT", "eighty")
    with pytest.raises(ConfigError, match=r"^port: .*integer.*\(from HBD_PORT\)$"):
        DaemonSettings.load()
    monkeypatch.delenv("HBD_PORT")
    monkeypatch.setenv("HBD_EXECUTORS", "http://a:1")
    with pytest.raises(ConfigError, match=r"^executors: not valid JSON.*\(from HBD_EXECUTORS\)$"):
        DaemonSettings.load()


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        DaemonSettings.load(config=tmp_path / "nope.toml")


def test_beyond_loopback_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^host: 0\.0\.0\.0 is reachable .* token is required"):
        DaemonSettings.load(overrides={"host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="token is required"):
        ExecutorSettings.load(overrides={"host": "10.1.2.3"})
    monkeypatch.setenv("HBD_TOKEN", TOKEN)
    assert DaemonSettings.load(overrides={"host": "0.0.0.0"}).token == TOKEN


def test_loopback_detection() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))


def test_token_sources_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli_file = tmp_path / "cli.token"
    cli_file.write_text("c" * 32 + "\n")
    conf_file = tmp_path / "conf.token"
    conf_file.write_text("f" * 32)
    path = toml(tmp_path, f'token_file = "{conf_file}"\n')
    assert DaemonSettings.load(config=path).token == "f" * 32
    monkeypatch.setenv("HBD_TOKEN", "e" * 32)  # the environment beats the config file
    assert DaemonSettings.load(config=path).token == "e" * 32
    s = DaemonSettings.load(  # --token-file beats everything
        config=path, overrides={"token_file": cli_file}, flags={"token_file": "--token-file"}
    )
    assert s.token == "c" * 32
    assert s.public()["token"] == "********"
    assert "c" * 32 not in json.dumps(s.public()) + repr(s) + str(s.model_dump())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "is empty"),
        ("x7q9", "shorter than 16"),
        ("a b" * 10, "without spaces"),
    ],
)
def test_bad_token_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        DaemonSettings.load(overrides={"token_file": path})
    assert str(info.value).startswith(("token_file:", "token:"))
    if content:
        assert content not in str(info.value).replace(str(path), "")


# ---------------------------------------------------------------- through the CLI


def test_serve_with_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = toml(tmp_path, f'port = 70000\ndb = "{tmp_path / "db" / "hbd.db"}"\n')
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"error: config error: port: Input should be less than or equal to 65535 (from {path})"
    )
    assert not (tmp_path / "db").exists()  # nothing was started or created


def test_serve_beyond_loopback_without_token_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--db", str(tmp_path / "db" / "hbd.db")]) == 2
    assert "host: 0.0.0.0 is reachable from other machines" in capsys.readouterr().err
    assert not (tmp_path / "db").exists()
    assert main(["executor", "--host", "0.0.0.0", "--workdir", str(tmp_path / "w")]) == 2
    assert not (tmp_path / "w").exists()


def test_config_show_masks_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HBD_TOKEN", TOKEN)
    path = toml(tmp_path, "port = 9200\n")
    assert main(["config", "show", "--config", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["settings"]["port"] == 9200 and data["sources"]["port"] == str(path)
    assert data["settings"]["token"] == "********" and data["sources"]["token"] == "HBD_TOKEN"
    assert TOKEN not in out
    assert main(["config", "show", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "port" in text and "9200" in text and TOKEN not in text


def test_config_show_warns_when_serving_would_be_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HBD_EXECUTOR_HOST", "0.0.0.0")
    assert main(["config", "show", "executor"]) == 1
    captured = capsys.readouterr()
    assert "0.0.0.0" in captured.out and "token is required" in captured.err


def test_the_default_body_limit_is_the_servers() -> None:
    from hbd.api.asgi import MAX_REQUEST_BODY_BYTES
    from hbd.cli.base import MAX_SPEC_BYTES
    from hbd.settings import DEFAULT_MAX_REQUEST_BYTES

    assert DEFAULT_MAX_REQUEST_BYTES == MAX_REQUEST_BODY_BYTES == MAX_SPEC_BYTES
