"""The executor backend seam: chosen by URL scheme, one Protocol for all."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
import yaml

from hbd.daemon.app import Daemon
from hbd.daemon.backend import BACKENDS, ExecutorBackend, backend_for
from hbd.daemon.clock import FakeClock
from hbd.daemon.executors import ExecutorClient
from hbd.errors import ConfigError, ExecutorRejected, NotFound
from hbd.protocol import Health, MetricsPage, TrialResources, TrialStatus, TrialSubmission
from hbd.store.log import open_store
from tests.daemon.helpers import wait_finished
from tests.e2e.conftest import sweep_yaml


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


class MemoryBackend:
    """A backend that is not the HTTP client: trials "run" in a dict, GPU devices counted.

    A trial runs from its submit until the first status asked of it; the
    backend records the most devices ever held at once.
    """

    instances: ClassVar[list[MemoryBackend]] = []

    def __init__(self, url: str, *, token: str | None = None, gpus: int = 2) -> None:
        self.url = url
        self.gpus = gpus
        self.running: dict[str, TrialSubmission] = {}
        self.done: dict[str, TrialStatus] = {}
        self.peak_gpus = 0
        self.closed = False
        MemoryBackend.instances.append(self)

    def describe(self) -> str:
        return f"memory at {self.url}"

    def _held(self) -> int:
        return sum(s.resources.gpus if s.resources else 0 for s in self.running.values())

    async def submit(self, submission: TrialSubmission) -> TrialStatus:
        if submission.id not in self.done:
            self.running[submission.id] = submission
            self.peak_gpus = max(self.peak_gpus, self._held())
        return await self._status(submission.id, finish=False)

    async def _status(self, trial_id: str, *, finish: bool) -> TrialStatus:
        if trial_id in self.done:
            return self.done[trial_id]
        sub = self.running.get(trial_id)
        if sub is None:
            raise NotFound(trial_id)
        if not finish:
            return TrialStatus(id=trial_id, sweep_id=sub.sweep_id, state="running", started_at=0)
        del self.running[trial_id]
        self.done[trial_id] = TrialStatus(
            id=trial_id,
            sweep_id=sub.sweep_id,
            state="succeeded",
            metrics={"loss": float(sub.params["x"])},
            started_at=0,
            ended_at=1,
        )
        return self.done[trial_id]

    async def status(self, trial_id: str) -> TrialStatus:
        return await self._status(trial_id, finish=True)

    async def metrics(self, trial_id: str, *, after: int, limit: int) -> MetricsPage:
        raise NotFound(trial_id)

    async def cancel(self, trial_id: str) -> TrialStatus | None:
        return None

    async def logs(self, trial_id: str, stream: str, offset: int) -> dict[str, Any]:
        raise NotFound(trial_id)

    async def health(self, *, single: bool = False) -> Health:
        devices = [str(i) for i in range(self.gpus)]
        return Health(
            version="mem",
            slots=8,
            free_slots=8 - len(self.running),
            running=sorted(self.running),
            gpus=devices,
            free_gpus=devices[self._held() :],
        )

    async def delete_checkpoint(self, trial_id: str) -> int:
        raise ExecutorRejected("this backend keeps no checkpoints")

    async def aclose(self) -> None:
        self.closed = True


def test_a_new_scheme_is_accepted_by_the_settings_once_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hbd.settings import DaemonSettings

    with pytest.raises(ValueError, match="not an executor URL"):
        DaemonSettings(executors=["mem://a"])
    monkeypatch.setitem(BACKENDS, "mem", f"{__name__}:MemoryBackend")
    assert DaemonSettings(executors=["mem://a"]).executors == ["mem://a"]


@pytest.mark.anyio
async def test_the_daemon_runs_a_sweep_on_any_backend_and_never_oversubscribes_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend registered by scheme needs no other daemon change; each trial asks
    for one GPU of the two the backend has, so at most two run at once though it has 8 slots."""
    monkeypatch.setitem(BACKENDS, "mem", f"{__name__}:MemoryBackend")
    spec = yaml.safe_load(sweep_yaml(tmp_path / "u.jsonl", concurrency=None))
    spec["component"]["container"]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    store = await open_store(tmp_path / "hbd.db")
    try:
        async with anyio.create_task_group() as tg:
            daemon = Daemon(store, clock=FakeClock())
            backend = backend_for("mem://a", token=None)
            daemon.add_executor("mem://a", backend)
            await tg.start(daemon.run)
            sweep_id, _ = await daemon.submit(yaml.safe_dump(spec))
            assert await wait_finished(daemon, sweep_id) == "succeeded"
            tg.cancel_scope.cancel()
    finally:
        await store.close()
    assert isinstance(backend, MemoryBackend) and backend.closed
    assert len(backend.done) > 8
    assert backend.peak_gpus == 2
