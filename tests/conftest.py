"""Shared pytest configuration.

The README's test command runs the suite on two xdist workers (``-n 2 --dist
loadgroup``): most tests wait on real processes, so two at a time keep both
cores busy. Two things keep that sound:

- every test that uses the session's Ray cluster runs on one worker (group
  "ray"), so a run starts one cluster, not one per worker;
- a test marked ``alone`` (one that bounds a latency, so another worker's load
  would make it flaky) runs while the other worker runs nothing: a
  readers-writer lock over flock(2), shared by every other test.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # The daemon runs on asyncio (aiosqlite and uvicorn need it); test on the same.
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))


@contextlib.contextmanager
def _flock(path: Path, how: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, how)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _turn(folder: Path, alone: bool) -> Iterator[None]:
    """A readers-writer lock between the workers of one run.

    The turnstile keeps a waiting ``alone`` test from being starved: while it
    holds the turnstile no other test starts, and it takes the lock once the
    test running elsewhere has ended.
    """
    turnstile, shared = folder / "hbd-turnstile.lock", folder / "hbd-tests.lock"
    if alone:
        with _flock(turnstile, fcntl.LOCK_EX), _flock(shared, fcntl.LOCK_EX):
            yield
    else:
        with _flock(turnstile, fcntl.LOCK_EX):
            pass
        with _flock(shared, fcntl.LOCK_SH):
            yield


@pytest.fixture(autouse=True)
def _worker_turn(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    # Autouse and function-scoped: taken before the test's own function-scoped
    # fixtures (its daemon) and released after their teardown.
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    folder = tmp_path_factory.getbasetemp().parent  # one per run, shared by its workers
    with _turn(folder, request.node.get_closest_marker("alone") is not None):
        yield
