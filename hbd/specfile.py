"""A spec as a file on disk: Polyaxon's ``pathRef`` and relative ``workingDir``.

Both are relative to the spec's folder, which only the client knows (the
daemon receives text over HTTP, and the core does no I/O). So every command
that reads a spec file (``hbd validate``, ``plan``, ``simulate``, ``submit``,
``run``) calls ``resolve_spec`` first: the component file is read and
inlined, ``workingDir`` becomes absolute, and the result is the text that is
validated and submitted. The daemon and the API refuse an unresolved
``pathRef`` with that reason.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hbd.core.errors import SpecError, SpecProblem
from hbd.core.spec import load_data

__all__ = ["MAX_COMPONENT_BYTES", "resolve_spec", "resolve_spec_data"]

# A component file is a spec's part: no larger than a whole spec may be (1 MiB,
# the API's request limit), so an accidental pathRef to a dataset fails fast.
MAX_COMPONENT_BYTES = 1024 * 1024

_PATH_REF_KEYS = ("pathRef", "path_ref")


def resolve_spec(text: str, folder: Path) -> str:
    """``text`` with its pathRef inlined and its workingDir absolute; raises SpecError.

    Returns ``text`` itself when there is nothing to resolve (comments kept).
    """
    return resolve_spec_data(text, folder)[0]


def resolve_spec_data(text: str, folder: Path) -> tuple[str, object]:
    """``resolve_spec``'s text, and its data as ``load_data`` gives it: parsed
    once when there is nothing to resolve (parsing is much of ``hbd validate``'s time)."""
    data = load_data(text)
    if not isinstance(data, Mapping):
        return text, data  # parse_spec reports it
    out: dict[Any, Any] = dict(data)
    changed = False
    keys = [k for k in _PATH_REF_KEYS if k in out]
    if keys:
        key = keys[0]
        if "component" in out:
            raise SpecError([SpecProblem(key, "give `pathRef` or `component`, not both")])
        out["component"] = _read_component(out.pop(key), folder, key)
        changed = True
    component = out.get("component")
    if isinstance(component, Mapping):
        fixed = _absolute_working_dir(component, folder)
        if fixed is not None:
            out["component"] = fixed
            changed = True
    if not changed:
        return text, data
    resolved = yaml.safe_dump(out, sort_keys=False, allow_unicode=True)
    return resolved, load_data(resolved)


def _read_component(ref: object, folder: Path, key: str) -> object:
    if not isinstance(ref, str) or not ref or "\0" in ref:
        raise SpecError([SpecProblem(key, f"must be a file path, got {ref!r}")])
    path = folder / ref
    try:
        # O_NONBLOCK: a FIFO must not hang the CLI; only regular files are read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SpecError([SpecProblem(key, f"{ref}: no such file (relative to {folder})")]) from None
    except OSError as exc:
        raise SpecError([SpecProblem(key, f"{ref}: cannot read: {exc.strerror}")]) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SpecError([SpecProblem(key, f"{ref}: not a regular file")])
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_COMPONENT_BYTES + 1)
    except OSError as exc:
        raise SpecError([SpecProblem(key, f"{ref}: cannot read: {exc.strerror}")]) from None
    finally:
        os.close(fd)
    if len(raw) > MAX_COMPONENT_BYTES:
        raise SpecError([SpecProblem(key, f"{ref}: larger than {MAX_COMPONENT_BYTES // 1024} KiB")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError([SpecProblem(key, f"{ref}: not UTF-8 text")]) from None
    try:
        data = load_data(text)
    except SpecError as exc:
        raise SpecError([SpecProblem(key, f"{ref}: {p.msg}") for p in exc.problems]) from None
    if not isinstance(data, Mapping):
        raise SpecError([SpecProblem(key, f"{ref}: a component must be a mapping")])
    return dict(data)


def _absolute_working_dir(component: Mapping[str, Any], folder: Path) -> dict[str, Any] | None:
    """The component with a relative workingDir made absolute, or None if nothing changes."""
    run = component.get("run")
    if isinstance(run, Mapping) and isinstance(run.get("container"), Mapping):
        container = run["container"]
        rebuilt = _container(container, folder)
        if rebuilt is None:
            return None
        return {**component, "run": {**run, "container": rebuilt}}
    container = component.get("container")
    if isinstance(container, Mapping):
        rebuilt = _container(container, folder)
        if rebuilt is not None:
            return {**component, "container": rebuilt}
    return None


def _container(container: Mapping[str, Any], folder: Path) -> dict[str, Any] | None:
    for key in ("workingDir", "working_dir"):
        wd = container.get(key)
        if isinstance(wd, str) and wd and "\0" not in wd and not os.path.isabs(wd):
            return {**container, key: os.path.normpath(os.path.join(folder.resolve(), wd))}
    return None
