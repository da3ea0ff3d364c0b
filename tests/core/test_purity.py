"""hbd.core is sans-I/O: it imports no I/O library, clock, OS access or global RNG."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import hbd.core

CORE = Path(hbd.core.__file__).parent
IO_LIBRARIES = {
    "anyio",
    "asyncio",
    "httpx",
    "aiosqlite",
    "sqlite3",
    "structlog",
    "fastapi",
    "starlette",
    "uvicorn",
}
FORBIDDEN_IN_SOURCE = IO_LIBRARIES | {
    "os",
    "time",
    "random",
    "socket",
    "subprocess",
    "pathlib",
    "datetime.now",
}


def test_importing_the_core_loads_no_io_library() -> None:
    code = "import sys, json, hbd.core, hbd.core.sweep; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = {name.split(".")[0] for name in json.loads(out)}
    assert not loaded & IO_LIBRARIES


def test_core_sources_import_nothing_forbidden() -> None:
    offenders = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_IN_SOURCE
            ]
    assert offenders == []


def test_core_exports_are_importable() -> None:
    for name in hbd.core.__all__:
        assert getattr(hbd.core, name) is not None
