"""Fixtures for store tests: a fresh file-backed store per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hbd.store import Store, open_store

SWEEP = "sw-1"


def submitted(seed: int = 7, name: str = "demo") -> tuple[str, dict[str, Any]]:
    return (
        "sweep.submitted",
        {
            "name": name,
            "spec": "matrix:\n  kind: hyperband\n",
            "spec_json": {"kind": "hyperband"},
            "seed": seed,
        },
    )


def scheduled(
    trial_id: str,
    *,
    bracket: int = 2,
    rung: int = 0,
    index: int = 0,
    resume_from: str | None = None,
) -> tuple[str, dict[str, Any]]:
    return (
        "trial.scheduled",
        {
            "trial_id": trial_id,
            "bracket": bracket,
            "rung": rung,
            "index": index,
            "config": {"lr": 0.01, "layers": 3},
            "resource": 9.0,
            "parent": None,
            "resume_from": resume_from,
        },
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "hbd.sqlite3"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    async with await open_store(db_path) as s:
        yield s
