"""Polyaxon's command templates, parsed and rendered without Jinja and without a shell.

A template is one argv element (or env value) with ``{{ ... }}`` expressions.
The expressions Polyaxon users write and that mean something on a host:

- ``{{ NAME }}``: the display value of an input or param (a flag input gives
  ``--NAME`` or nothing);
- ``{{ params.NAME.value }}``, ``{{ params.NAME.as_str }}``, ``{{ params.NAME.as_arg }}``
  (``--NAME=VALUE``; a flag gives ``--NAME`` or nothing; an input's ``argFormat``
  wins);
- ``{{ params.as_args }}``: every param's ``as_arg``. As a whole argv element it
  becomes one element per param (what Polyaxon users mean by it); inside a
  longer element (``bash -c "train.py {{ params.as_args }}"``) it is the items
  joined shell-quoted;
- ``{{ globals.X }}`` for X in ``GLOBALS``.

Rendering happens in two places with one grammar: the daemon renders all but
``EXECUTOR_GLOBALS`` (it knows params, trial id and iteration) and the
executor renders those (it knows the trial's directory). Values may not
contain ``{{`` (refused at validation), so a rendered value is never read as
a template by the second pass.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DAEMON_GLOBALS",
    "EXECUTOR_GLOBALS",
    "GLOBALS",
    "PLACEHOLDER",
    "TEMPLATE",
    "Expr",
    "ParamValue",
    "TemplateError",
    "as_arg",
    "display_value",
    "expressions",
    "format_value",
    "parse_expr",
    "render_argv",
    "render_items",
    "render_text",
]

# `{{ name }}` (dotted names reach into mappings): what an executor substitutes
# from a submission's params. Shared with the spec checks.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
# Any double-brace expression; everything in it is checked against the grammar.
TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_EXPR = re.compile(
    rf"^(?:(?P<name>{_NAME})"
    rf"|params\.(?P<pname>{_NAME})\.(?P<attr>value|as_arg|as_str)"
    rf"|params\.(?P<as_args>as_args)"
    rf"|globals\.(?P<global>{_NAME}))$"
)

# Known on the daemon: the trial id and Polyaxon's hyperband (iteration,
# bracket_iteration), where iteration i runs bracket s_max - i.
DAEMON_GLOBALS = ("run_uuid", "uuid", "iteration", "bracket_iteration")
# Known on the executor only: the trial's directory there.
EXECUTOR_GLOBALS = ("run_outputs_path", "run_artifacts_path")
GLOBALS = DAEMON_GLOBALS + EXECUTOR_GLOBALS

SUPPORTED = (
    "{{ NAME }}, {{ params.NAME.value|as_arg|as_str }}, {{ params.as_args }}, {{ globals.X }}"
)


class TemplateError(ValueError):
    """A template names something that has no value, or is not in the grammar."""


@dataclass(frozen=True, slots=True)
class Expr:
    kind: Literal["name", "value", "as_arg", "as_str", "as_args", "global"]
    name: str = ""


def parse_expr(inner: str) -> Expr:
    """One ``{{ inner }}`` expression; raises TemplateError naming what is supported."""
    text = inner.strip()
    m = _EXPR.match(text)
    if m is None:
        shown = text if len(text) <= 30 else text[:27] + "..."
        raise TemplateError(f"unsupported template `{{{{ {shown} }}}}`; supported: {SUPPORTED}")
    if m["name"]:
        return Expr("name", m["name"])
    if m["pname"]:
        return Expr(m["attr"], m["pname"])  # type: ignore[arg-type]
    if m["as_args"]:
        return Expr("as_args")
    name = m["global"]
    if name not in GLOBALS:
        shown = name if len(name) <= 20 else name[:17] + "..."
        raise TemplateError(f"unsupported globals.{shown}; supported: {', '.join(GLOBALS)}")
    return Expr("global", name)


def expressions(template: str) -> list[Expr]:
    """Every expression of ``template``, in order; raises TemplateError for a bad one."""
    if "{%" in template:
        raise TemplateError("Jinja statements `{% ... %}` are not supported; use `{{ ... }}`")
    return [parse_expr(m) for m in TEMPLATE.findall(template)]


def format_value(value: Any) -> str:
    """The argv/environment string form of a value.

    bool -> ``true``/``false``, None -> ``null``, float -> shortest repr
    (``0.001``, ``1e-05``), int and str as-is, lists and mappings as compact
    JSON.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


@dataclass(frozen=True, slots=True)
class ParamValue:
    """A param's value and how its input wants it shown."""

    value: Any
    is_flag: bool = False
    arg_format: str | None = None
    in_args: bool = True  # part of params.as_args (Polyaxon leaves context-only params out)


def display_value(name: str, p: ParamValue) -> str:
    if p.is_flag:
        return f"--{name}" if p.value else ""
    return format_value(p.value)


def as_arg(name: str, p: ParamValue) -> str:
    """Polyaxon's ``as_arg``: ``--name=value``; "" for a false flag or no value."""
    if p.value is None:
        return ""
    if p.arg_format is not None:
        return PLACEHOLDER.sub(lambda m: format_value(p.value), p.arg_format)
    if p.is_flag:
        return f"--{name}" if p.value else ""
    return f"--{name}={format_value(p.value)}"


def _as_args(params: Mapping[str, ParamValue]) -> list[str]:
    return [a for n, p in params.items() if p.in_args and (a := as_arg(n, p))]


def _render_one(
    expr: Expr,
    params: Mapping[str, ParamValue],
    globals_: Mapping[str, str],
    keep_globals: tuple[str, ...],
    raw: str,
) -> str:
    if expr.kind == "global":
        if expr.name in globals_:
            return globals_[expr.name]
        if expr.name in keep_globals:
            return raw  # rendered later, where it is known
        raise TemplateError(f"`{{{{ globals.{expr.name} }}}}` has no value here")
    if expr.kind == "as_args":
        return shlex.join(_as_args(params))
    p = params.get(expr.name)
    if p is None:
        raise TemplateError(f"`{raw}` names no input or param")
    if expr.kind == "name":
        return display_value(expr.name, p)
    if expr.kind == "as_arg":
        return as_arg(expr.name, p)
    return format_value(p.value)  # value, as_str


def render_text(
    template: str,
    params: Mapping[str, ParamValue],
    globals_: Mapping[str, str],
    *,
    keep_globals: tuple[str, ...] = (),
) -> str:
    """``template`` with every expression replaced (``keep_globals`` left as written)."""
    expressions(template)  # refuse anything outside the grammar first

    def sub(m: re.Match[str]) -> str:
        return _render_one(parse_expr(m[1]), params, globals_, keep_globals, m[0])

    return TEMPLATE.sub(sub, template)


def render_items(
    items: list[str],
    params: Mapping[str, ParamValue],
    globals_: Mapping[str, str],
    *,
    keep_globals: tuple[str, ...] = (),
) -> list[str]:
    """Render argv templates: one element in, one out, except two cases.

    An element that is exactly ``{{ params.as_args }}`` becomes one element per
    arg, and an element that is exactly one flag/``as_arg`` expression
    rendering to nothing is dropped (Polyaxon would pass an empty argument).
    """
    out: list[str] = []
    for item in items:
        whole = TEMPLATE.fullmatch(item.strip())
        if whole is not None:
            expr = parse_expr(whole[1])
            if expr.kind == "as_args":
                out.extend(_as_args(params))
                continue
            if expr.kind in ("name", "as_arg"):
                rendered = _render_one(expr, params, globals_, keep_globals, whole[0])
                if rendered or not _droppable(expr, params):
                    out.append(rendered)
                continue
        out.append(render_text(item, params, globals_, keep_globals=keep_globals))
    return out


def _droppable(expr: Expr, params: Mapping[str, ParamValue]) -> bool:
    p = params.get(expr.name)
    return p is not None and (p.is_flag or expr.kind == "as_arg")


# ---------------------------------------------------------------- executor side

_MISSING = object()


def _lookup(params: Mapping[str, Any], name: str) -> Any:
    if name in params:
        return params[name]
    current: Any = params  # dotted names reach into nested mappings
    for part in name.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def render_argv(
    command: list[str], params: Mapping[str, Any], globals_: Mapping[str, str] | None = None
) -> list[str]:
    """The executor's pass: ``{{ name }}`` from params, ``{{ globals.X }}`` from ``globals_``.

    One element in, one out. Raises TemplateError naming every placeholder
    without a value.
    """
    known: Mapping[str, str] = globals_ or {}

    def value(name: str) -> Any:
        if name.startswith("globals.") and name.removeprefix("globals.") in known:
            return known[name.removeprefix("globals.")]
        return _lookup(params, name)

    names = {m[1] for part in command for m in PLACEHOLDER.finditer(part)}
    missing = sorted(n for n in names if value(n) is _MISSING)
    if missing:
        raise TemplateError(f"unknown placeholder(s) in command: {', '.join(missing)}")
    render: Callable[[re.Match[str]], str] = lambda m: format_value(value(m[1]))  # noqa: E731
    return [PLACEHOLDER.sub(render, p) for p in command]
