"""README's promises that code can check: the two commands, the state diagram."""

from __future__ import annotations

import re
from pathlib import Path

from hbd.core.bracket import state_diagram

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands() -> list[str]:
    head = README.split("## ", 1)[0]
    return [line.strip() for line in head.splitlines() if line.startswith("    ")]


def test_readme_opens_with_the_two_commands() -> None:
    run, test = _commands()[:2]
    assert "hbd run examples/" in run and "pip install" in run
    assert "pytest" in test and "pip install" in test


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci.splitlines()


def test_the_example_of_the_first_command_exists() -> None:
    spec = re.search(r"hbd run (\S+)", _commands()[0])
    assert spec and (ROOT / spec.group(1)).is_file()


def test_state_diagram_is_generated_from_the_transition_tables() -> None:
    assert state_diagram() in README


def test_the_spec_example_in_the_readme_is_valid() -> None:
    from hbd.core.spec import load_spec

    block = README.split("## The spec", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    spec = load_spec(block)
    assert spec.matrix.max_iterations == 81 and spec.max_retries == 1
