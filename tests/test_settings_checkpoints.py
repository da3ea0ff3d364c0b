"""The daemon settings ``checkpoints`` and ``checkpoints_keep`` (ckpt helper): one clear line per mistake."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hbd.cli import main
from hbd.errors import ConfigError
from hbd.settings import DaemonSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("HBD_") or name in ("STATE_DIRECTORY", "NOTIFY_SOCKET"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def test_defaults_each_executor_keeps_its_own_and_only_the_resumable_are_kept() -> None:
    s = DaemonSettings.load()
    assert s.checkpoints is None and not s.shared_checkpoints
    assert s.checkpoints_keep == "resumable"


@pytest.mark.parametrize(
    "value", ["/mnt/ckpt", "s3://bucket/sweeps", "file:///tmp/x", "memory://c", " /mnt/x "]
)
def test_a_shared_path_or_a_url_is_taken(value: str, tmp_path: Path) -> None:
    path = tmp_path / "hbd.toml"
    path.write_text(f'checkpoints = "{value}"\ncheckpoints_keep = "all"\n')
    s = DaemonSettings.load(config=path)
    assert s.checkpoints == value.strip() and s.shared_checkpoints
    assert s.checkpoints_keep == "all"


def test_an_empty_value_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HBD_CHECKPOINTS", "")
    assert DaemonSettings.load().checkpoints is None


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        (
            "HBD_CHECKPOINTS",
            "relative/dir",
            r"^checkpoints: .*absolute path or a URL.*\(from HBD_CHECKPOINTS\)$",
        ),
        ("HBD_CHECKPOINTS", "s3:/bucket", r"^checkpoints: .*absolute path or a URL"),
        ("HBD_CHECKPOINTS", "/" + "x" * 5000, r"^checkpoints: .*4096"),
        (
            "HBD_CHECKPOINTS_KEEP",
            "some",
            r"^checkpoints_keep: .*'all' or 'resumable'.*\(from HBD_CHECKPOINTS_KEEP\)$",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=message) as info:
        DaemonSettings.load()
    assert "\n" not in str(info.value)


def test_a_nul_in_the_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hbd.toml"
    path.write_text('checkpoints = "/mnt/a\\u0000b"\n')
    with pytest.raises(ConfigError, match=r"^checkpoints: .*NUL"):
        DaemonSettings.load(config=path)


def test_doctor_reports_where_checkpoints_live_and_what_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("HBD_DB", str(tmp_path / "hbd.db"))
    monkeypatch.setenv("HBD_PORT", "1")  # nothing listens: the remote checks fail, ours are printed
    monkeypatch.setenv("HBD_CHECKPOINTS", str(shared))
    main(["doctor"])
    out = capsys.readouterr().out
    assert f"ok    checkpoints: shared directory {shared}; kept: what can still be resumed" in out
    monkeypatch.setenv("HBD_CHECKPOINTS", str(tmp_path / "missing"))
    monkeypatch.setenv("HBD_CHECKPOINTS_KEEP", "all")
    main(["doctor"])
    out = capsys.readouterr().out
    assert f"warn  checkpoints: {tmp_path / 'missing'} is not a directory here" in out
    monkeypatch.setenv("HBD_CHECKPOINTS", "s3://bucket/x")
    main(["doctor"])
    assert (
        "ok    checkpoints: fsspec URL s3://bucket/x (executors need hbd[checkpoints]); all kept"
        in (capsys.readouterr().out)
    )
