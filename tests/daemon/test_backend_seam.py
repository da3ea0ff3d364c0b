"""The executor backend seam: chosen by URL scheme, one Protocol for all."""

from __future__ import annotations

import pytest

from hbd.daemon.backend import ExecutorBackend, backend_for
from hbd.daemon.executors import ExecutorClient
from hbd.errors import ConfigError
from hbd.protocol import TrialResources


@pytest.mark.anyio
async def test_http_urls_get_the_agent_client() -> None:
    for url in ("http://127.0.0.1:9", "https://example.invalid:9/"):
        backend = backend_for(url)
        try:
            assert isinstance(backend, ExecutorClient)
            assert isinstance(backend, ExecutorBackend)
            assert backend.describe() == f"hbd agent at {url.rstrip('/')}"
        finally:
            await backend.aclose()


@pytest.mark.parametrize("url", ["ftp://h:1", "127.0.0.1:8000", "", "file:///tmp/x"])
def test_unknown_scheme_is_a_config_error_naming_the_known_ones(url: str) -> None:
    with pytest.raises(ConfigError, match=r"unknown scheme.*http://, https://"):
        backend_for(url)


@pytest.mark.parametrize(
    ("resources", "gpus"),
    [
        ({}, 0),
        ({"limits": {"nvidia.com/gpu": "2"}}, 2),
        ({"requests": {"nvidia.com/gpu": "1"}}, 1),
        ({"limits": {"nvidia.com/gpu": "3"}, "requests": {"nvidia.com/gpu": "1"}}, 3),
        ({"limits": {"cpu": "500m"}}, 0),
    ],
)
def test_gpus_asked_for(resources: dict[str, dict[str, str]], gpus: int) -> None:
    assert TrialResources.model_validate(resources).gpus == gpus


@pytest.mark.parametrize("quantity", ["0.5", "-1", "1e3", "65", str(2**63), "1 "])
def test_a_gpu_count_is_whole_and_bounded(quantity: str) -> None:
    with pytest.raises(ValueError, match="whole number of devices"):
        TrialResources(limits={"nvidia.com/gpu": quantity})
