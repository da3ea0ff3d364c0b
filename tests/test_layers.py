"""hbd's modules import each other in one direction, without cycles.

Every module of the package is parsed with ``ast`` (nothing is imported), and
every ``import`` counts: at module level, under ``if TYPE_CHECKING:`` and inside
functions. A cycle hidden from runtime by ``TYPE_CHECKING`` or a lazy import is
still a cycle for the reader, so it fails here.

The layer order is DESIGN.md's ("Three layers, one direction of imports"),
written down as data in ``LAYERS``: each layer names the modules it holds and
the layers it may import. A module may always import its own layer (cycles
inside a layer are caught by the cycle test instead).

Python runs a package's ``__init__`` before any of its modules; that implicit
edge is not counted, so a package ``__init__`` must stay light (the root
``hbd/__init__.py`` imports the stdlib-only ``hbd.report`` and nothing else
eagerly). ``hbd.version`` is where modules read the version from, not ``hbd``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import hbd

PACKAGE_DIR = Path(hbd.__file__).parent


@dataclass(frozen=True, slots=True, kw_only=True)
class Layer:
    # Module names this layer holds: a name holds itself and everything below it
    # (the longest matching name among all layers wins).
    holds: frozenset[str]
    # Layers (by name) this one may import, besides itself.
    may_import: frozenset[str]
    why: str


def _layer(holds: Iterable[str], may_import: Iterable[str], why: str) -> Layer:
    return Layer(holds=frozenset(holds), may_import=frozenset(may_import), why=why)


# Lowest first. DESIGN.md: cli → api → daemon → store → core, executor beside
# daemon, core imports nothing of hbd but core.
LAYERS: Mapping[str, Layer] = {
    "core": _layer(["hbd.core"], [], "pure, sans-I/O: spec, space, geometry, state machine"),
    "base": _layer(
        [
            "hbd.errors",
            "hbd.protocol",
            "hbd.settings",
            "hbd.lock",
            "hbd.logs",
            "hbd.report",
            "hbd.version",
            "hbd.http",
            "hbd.gpus",
            "hbd.checkpoints",
        ],
        ["core"],
        "shared by every I/O layer: error tree, executor wire protocol, settings, "
        "locks, logging, URLs and auth headers, the trial-side report helper, "
        "GPU device lists, checkpoint stores",
    ),
    "store": _layer(["hbd.store"], ["core", "base"], "the only code that writes SQL"),
    "executor": _layer(
        ["hbd.executor"], ["core", "base"], "the agent that runs trials: beside the daemon"
    ),
    "daemon": _layer(["hbd.daemon"], ["core", "base", "store"], "the async shell"),
    "offline": _layer(
        ["hbd.specfile", "hbd.planview", "hbd.simulate"],
        ["core", "base"],
        "spec tools that run the core without services (validate, plan, simulate)",
    ),
    "export": _layer(["hbd.export"], ["core", "base"], "event logs into other tools' formats"),
    "client": _layer(
        ["hbd.client", "hbd.sync_client"],
        ["core", "base", "export"],
        "talks to the daemon over HTTP; imports nothing of the server",
    ),
    "web": _layer(["hbd.web"], ["core", "base"], "the browser page, mounted by the API"),
    "api": _layer(
        ["hbd.api"],
        ["core", "base", "store", "daemon", "executor", "web"],
        "HTTP: the daemon's routes and SSE, the executor agent's routes",
    ),
    "cli": _layer(
        ["hbd.cli", "hbd.__main__"],
        ["core", "base", "store", "daemon", "executor", "offline", "export", "client", "api"],
        "person-facing commands: may import everything below",
    ),
    "facade": _layer(
        ["hbd"],
        ["base", "client"],
        "`import hbd`: hbd.report eagerly, hbd.Client on first use",
    ),
}


def module_files(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module under ``package_dir`` by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, source: str, is_package: bool, modules: Iterable[str]) -> set[str]:
    """The modules of ``modules`` that ``source`` (module ``name``) imports, anywhere in it.

    ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to
    ``a.b`` (``c`` is a name in it). An import of something not in ``modules``
    reaches the closest enclosing module that is.
    """
    known = set(modules)
    root = name.split(".")[0]
    package = name if is_package else name.rpartition(".")[0]

    def closest(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    targets: set[str | None] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets |= {closest(a.name) for a in node.names if a.name.split(".")[0] == root}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] != root:
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                targets.add(sub if sub in known else closest(module))
    return {t for t in targets if t is not None and t != name}


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    files = module_files(package_dir, package)
    return {
        name: imports_of(name, path.read_text(), path.name == "__init__.py", files)
        for name, path in files.items()
    }


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_of(module: str) -> str | None:
    best: tuple[int, str] | None = None
    for layer_name, layer in LAYERS.items():
        for held in layer.holds:
            if (module == held or module.startswith(held + ".")) and (
                best is None or len(held) > best[0]
            ):
                best = (len(held), layer_name)
    return best[1] if best else None


def violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        here = layer_of(module)
        assert here is not None
        for target in sorted(targets):
            there = layer_of(target)
            assert there is not None
            if there != here and there not in LAYERS[here].may_import:
                out.append(f"{module} ({here}) imports {target} ({there})")
    return out


GRAPH = import_graph(PACKAGE_DIR, "hbd")


def test_every_module_has_a_layer() -> None:
    assert [m for m in sorted(GRAPH) if layer_of(m) is None] == []


def test_the_layer_order_itself_has_no_cycle() -> None:
    allowed = {name: layer.may_import for name, layer in LAYERS.items()}
    assert cycles(allowed) == []
    assert all(target in LAYERS for targets in allowed.values() for target in targets)


def test_the_core_may_import_nothing_of_hbd_but_the_core() -> None:
    assert LAYERS["core"].may_import == frozenset()


def test_executor_and_daemon_stand_beside_each_other() -> None:
    assert "executor" not in LAYERS["daemon"].may_import
    assert "daemon" not in LAYERS["executor"].may_import


def test_no_module_imports_against_the_layer_order() -> None:
    assert violations(GRAPH) == []


def test_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


def test_the_graph_sees_what_is_there() -> None:
    # If parsing went blind (no edges), every rule above would pass vacuously.
    assert "hbd.store.log" in GRAPH["hbd.daemon.bus"]
    assert "hbd.core.events" in GRAPH["hbd.core.sweep"]
    assert len(GRAPH) > 80


# The checker itself, on small packages written for the purpose.


def _graph_of(tmp_path: Path, files: Mapping[str, str]) -> dict[str, set[str]]:
    for relative, text in files.items():
        path = tmp_path / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(tmp_path / "pkg", "pkg")


def test_a_cycle_through_type_checking_and_a_function_is_found(tmp_path: Path) -> None:
    graph = _graph_of(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
            "b.py": "def f():\n    from . import c\n",
            "c.py": "import pkg.a.x\n",
            "d.py": "from .sub.e import thing\n",
            "sub/__init__.py": "",
            "sub/e.py": "from .. import d\n",
        },
    )
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.c"}
    assert graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.d", "pkg.sub.e"]]


@pytest.mark.parametrize(
    ("module", "target", "allowed"),
    [
        ("hbd.daemon.app", "hbd.store.log", True),
        ("hbd.store.log", "hbd.daemon.app", False),
        ("hbd.core.sweep", "hbd.errors", False),
        ("hbd.executor.agent", "hbd.daemon.executors", False),
        ("hbd.web.app", "hbd.api.asgi", False),
        ("hbd.executor.agent", "hbd", False),
        ("hbd.cli.run", "hbd.api.server", True),
    ],
)
def test_the_layer_rule_judges_single_edges(module: str, target: str, allowed: bool) -> None:
    assert (violations({module: {target}}) == []) is allowed
