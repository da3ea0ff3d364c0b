"""``hbd init --systemd DIR --config DIR``: write the unit files and TOML templates.

An installed wheel carries them as ``hbd/templates/`` (setup.py copies them in
at build time); a source checkout has them at the top of the repository
(``systemd/``, ``config/``), which is where this looks when running from one.
Existing files are kept unless ``--force``: an operator's edited config is
not a template to overwrite.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hbd.cli.base import EXIT_OK, Command, UserError, say

SYSTEMD_UNITS = ("hbd.service", "hbd-executor.service")
CONFIG_TEMPLATES = ("hbd.toml", "hbd-executor.toml")


def template(folder: str, name: str) -> bytes:
    """The template ``name``: from the installed package, else from the checkout."""
    package = Path(__file__).resolve().parent.parent  # hbd/, without importing its façade
    for path in (package / "templates" / name, package.parent / folder / name):
        if path.is_file():
            return path.read_bytes()
    raise UserError(f"template {name} is missing from this installation of hbd")


def _args_init(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--systemd",
        type=Path,
        metavar="DIR",
        help="write hbd.service and hbd-executor.service here",
    )
    p.add_argument(
        "--config", type=Path, metavar="DIR", help="write hbd.toml and hbd-executor.toml here"
    )
    p.add_argument("--force", action="store_true", help="overwrite files that exist")


def cmd_init(args: argparse.Namespace) -> int:
    if args.systemd is None and args.config is None:
        raise UserError("say what to write: --systemd DIR and/or --config DIR")
    jobs = [
        (directory, folder, name)
        for directory, folder, names in (
            (args.systemd, "systemd", SYSTEMD_UNITS),
            (args.config, "config", CONFIG_TEMPLATES),
        )
        if directory is not None
        for name in names
    ]
    # Check everything before writing anything: no half-written set.
    for directory, _, name in jobs:
        if directory.exists() and not directory.is_dir():
            raise UserError(f"{directory}: not a directory")
        if (directory / name).exists() and not args.force:
            raise UserError(f"{directory / name} exists; keep it, or overwrite with --force")
    contents = [(directory, name, template(folder, name)) for directory, folder, name in jobs]
    for directory, name, data in contents:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(data)
        except OSError as exc:
            raise UserError(f"{directory / name}: cannot write: {exc.strerror}") from None
        say(f"wrote {directory / name}")
    return EXIT_OK


COMMANDS: tuple[Command, ...] = (
    Command("init", "write the systemd units and TOML config templates", _args_init, cmd_init),
)
