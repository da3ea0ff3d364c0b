"""Build hook: the wheel carries the systemd units and TOML templates.

They live at the top of the repository (``systemd/``, ``config/``), where the
docs and a checkout use them; ``build_py`` copies them into the built package
as ``hbd/templates/`` so that ``hbd init --systemd DIR --config DIR`` can write
them from an installed wheel. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

TEMPLATES = {
    "systemd": ("hbd.service", "hbd-executor.service"),
    "config": ("hbd.toml", "hbd-executor.toml"),
}


class BuildPyWithTemplates(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "hbd" / "templates"
        target.mkdir(parents=True, exist_ok=True)
        for folder, names in TEMPLATES.items():
            for name in names:
                shutil.copyfile(Path(folder) / name, target / name)


setup(cmdclass={"build_py": BuildPyWithTemplates})
