"""The wheel installs as documented: its name, license, templates and command."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hbd.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (path,) = out.glob("*.whl")
    return zipfile.ZipFile(path)


@pytest.mark.slow
def test_the_wheel_is_named_hyperband_daemon_with_an_spdx_license(wheel: zipfile.ZipFile) -> None:
    meta_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    meta = wheel.read(meta_name).decode()
    assert "\nName: hyperband-daemon\n" in meta
    assert "\nLicense-Expression: Apache-2.0\n" in meta
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel.namelist())
    entry = wheel.read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    assert "hbd = hbd.cli:main" in entry  # the command stays `hbd`
    assert "hbd/__init__.py" in wheel.namelist()  # and `import hbd`


@pytest.mark.slow
def test_the_wheel_carries_the_units_and_templates_as_in_the_repository(
    wheel: zipfile.ZipFile,
) -> None:
    for folder, name in [
        ("systemd", "hbd.service"),
        ("systemd", "hbd-executor.service"),
        ("config", "hbd.toml"),
        ("config", "hbd-executor.toml"),
    ]:
        assert wheel.read(f"hbd/templates/{name}") == (ROOT / folder / name).read_bytes()


def test_init_writes_the_units_and_templates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["init", "--systemd", str(tmp_path / "units"), "--config", str(tmp_path / "etc")]) == 0
    )
    assert (tmp_path / "units" / "hbd.service").read_bytes() == (
        ROOT / "systemd" / "hbd.service"
    ).read_bytes()
    assert (tmp_path / "etc" / "hbd-executor.toml").read_bytes() == (
        ROOT / "config" / "hbd-executor.toml"
    ).read_bytes()
    assert capsys.readouterr().out.count("wrote ") == 4


def test_init_keeps_existing_files_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hbd.toml").write_text("# mine\n")
    assert main(["init", "--config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "hbd.toml exists; keep it, or overwrite with --force" in err
    assert (tmp_path / "hbd.toml").read_text() == "# mine\n"
    assert not (tmp_path / "hbd-executor.toml").exists()  # nothing half-written
    assert main(["init", "--config", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "hbd.toml").read_text() != "# mine\n"


def test_init_needs_something_to_write(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 2
    assert "--systemd DIR and/or --config DIR" in capsys.readouterr().err
