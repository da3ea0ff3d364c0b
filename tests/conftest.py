"""Shared pytest configuration."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # The daemon runs on asyncio (aiosqlite and uvicorn need it); test on the same.
    return "asyncio"
