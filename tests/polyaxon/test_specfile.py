"""Reading pathRef and resolving workingDir against the spec's folder, adversarially."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from hbd.core.errors import SpecError
from hbd.core.spec import load_spec
from hbd.specfile import MAX_COMPONENT_BYTES, resolve_spec

COMPONENT = {
    "inputs": [{"name": "lr", "type": "float"}, {"name": "steps", "type": "int"}],
    "run": {"kind": "job", "container": {"command": ["t", "{{ lr }}"], "workingDir": "work"}},
}
OPERATION = """\
# a comment that survives when nothing needs resolving
version: 1.1
kind: operation
pathRef: {ref}
matrix:
  kind: hyperband
  maxIterations: 9
  resource: {{name: steps, type: int}}
  metric: {{name: loss}}
  params:
    lr: {{kind: uniform, value: [0, 1]}}
"""


def problem(text: str, folder: Path) -> str:
    with pytest.raises(SpecError) as info:
        resolve_spec(text, folder)
    (p,) = info.value.problems
    return str(p)


def test_path_ref_is_inlined_and_working_dir_made_absolute(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "train.yaml").write_text(yaml.safe_dump(COMPONENT))
    text = resolve_spec(OPERATION.format(ref="c/train.yaml"), tmp_path)
    spec = load_spec(text)
    # relative to the operation's folder, not the component's
    assert spec.component.container.working_dir == str(tmp_path.resolve() / "work")
    assert "pathRef" not in yaml.safe_load(text)


def test_nothing_to_resolve_keeps_the_text(tmp_path: Path) -> None:
    text = OPERATION.format(ref="x").replace("pathRef: x\n", "component: {}\n")
    assert resolve_spec(text, tmp_path) is text


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        (lambda d: None, "no such file"),
        (lambda d: (d / "c.yaml").mkdir(), "not a regular file"),
        (lambda d: os.mkfifo(d / "c.yaml"), "not a regular file"),
        (lambda d: (d / "c.yaml").write_text("[1, 2]"), "a component must be a mapping"),
        (lambda d: (d / "c.yaml").write_text("a: [1,"), "YAML syntax error"),
        (lambda d: (d / "c.yaml").write_bytes(b"\xff\xfe"), "not UTF-8"),
        (
            lambda d: (d / "c.yaml").write_bytes(b"#" * (MAX_COMPONENT_BYTES + 1)),
            "larger than 1024 KiB",
        ),
    ],
)
def test_bad_component_files_are_one_clear_line(tmp_path: Path, setup: object, words: str) -> None:
    setup(tmp_path)  # type: ignore[operator]
    p = problem(OPERATION.format(ref="c.yaml"), tmp_path)
    assert p.startswith("pathRef: c.yaml: ") and words in p, p


def test_path_ref_and_component_together_are_refused(tmp_path: Path) -> None:
    text = OPERATION.format(ref="c.yaml") + "component: {}\n"
    assert "not both" in problem(text, tmp_path)


@pytest.mark.parametrize("ref", ["''", "[1]", "null"])
def test_path_ref_must_be_a_path(tmp_path: Path, ref: str) -> None:
    assert "must be a file path" in problem(OPERATION.format(ref=ref), tmp_path)
