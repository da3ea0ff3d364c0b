"""The daemon's side of retention, piece by piece: the client's DELETE, each kind of store."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from hbd.daemon.clock import FakeClock
from hbd.daemon.executors import ExecutorClient
from hbd.daemon.retention import MAX_FREED_BYTES, Retention
from hbd.errors import ExecutorBusy, ExecutorRejected, ExecutorUnavailable
from hbd.store.log import Store, open_store

pytestmark = pytest.mark.anyio


def client(handler: Callable[[httpx.Request], httpx.Response]) -> ExecutorClient:
    return ExecutorClient(
        "http://agent", transport=httpx.MockTransport(handler), clock=FakeClock(), max_attempts=2
    )


async def test_the_client_deletes_through_the_route_and_names_each_refusal() -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        trial = request.url.path.split("/")[3]
        answers = {
            "ok": httpx.Response(200, json={"trial_id": "ok", "freed_bytes": 42}),
            "inuse": httpx.Response(409, json={"detail": "trial 'c' is running"}),
            "old": httpx.Response(404, json={"detail": "Not Found"}),
            "down": httpx.Response(503, json={"detail": "disk"}),
            "bad": httpx.Response(200, json={"trial_id": "bad", "freed_bytes": -1}),
        }
        return answers[trial]

    c = client(handler)
    try:
        assert await c.delete_checkpoint("ok") == 42
        assert seen == [("DELETE", "/v1/trials/ok/checkpoint")]
        with pytest.raises(ExecutorBusy, match="in use"):
            await c.delete_checkpoint("inuse")
        with pytest.raises(ExecutorRejected, match="HTTP 404"):
            await c.delete_checkpoint("old")
        with pytest.raises(ExecutorUnavailable, match="503"):
            await c.delete_checkpoint("down")
        with pytest.raises(ExecutorRejected, match="malformed"):
            await c.delete_checkpoint("bad")
    finally:
        await c.aclose()


class Fake:
    """An executor backend's delete_checkpoint: answers by trial id (bytes, or an error)."""

    def __init__(self, answers: dict[str, int | Exception] | None = None, default: int = 0) -> None:
        self.answers = answers or {}
        self.default = default
        self.asked: list[str] = []

    async def delete_checkpoint(self, trial_id: str) -> int:
        self.asked.append(trial_id)
        answer = self.answers.get(trial_id, self.default)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(tmp_path / "hbd.db")
    try:
        yield s
    finally:
        await s.close()


def retention(store: Store, checkpoints: str | None, backends: dict[str, Fake]) -> Retention:
    return Retention(
        store,
        backends,  # type: ignore[arg-type]
        FakeClock(),
        checkpoints=checkpoints,
        keep="resumable",
        executor_of=lambda _: None,
        published=lambda _: None,
    )


def checkpoint(root: Path, trial: str, size: int) -> None:
    (root / trial).mkdir(parents=True)
    (root / trial / "w.bin").write_bytes(b"w" * size)


async def test_a_shared_path_is_deleted_by_the_daemon_itself_once(
    store: Store, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    checkpoint(shared, "t1", 10)
    a = Fake(default=99)
    r = retention(store, str(shared), {"a": a})
    payload = await r._delete("t1", {"t1": "a"}, {})
    assert payload == {"trial_id": "t1", "freed_bytes": 10, "where": "shared", "executors": []}
    assert not (shared / "t1").exists() and a.asked == []  # trials wrote there directly
    again = await r._delete("t1", {"t1": "a"}, {})
    assert again is not None and again["freed_bytes"] == 0


async def test_a_url_store_and_the_staging_copies_where_it_ran_and_where_children_resumed(
    store: Store, tmp_path: Path
) -> None:
    bucket = tmp_path / "bucket"
    checkpoint(bucket, "p", 10)
    a, b, c = Fake(default=7), Fake(default=5), Fake(default=1000)
    r = retention(store, f"file://{bucket}", {"a": a, "b": b, "c": c})
    payload = await r._delete("p", {"p": "a", "k1": "b", "k2": "b"}, {"p": ["k1", "k2"]})
    assert payload == {"trial_id": "p", "freed_bytes": 22, "where": "url", "executors": ["a", "b"]}
    assert not (bucket / "p").exists()
    assert (a.asked, b.asked, c.asked) == (["p"], ["p"], [])


async def test_the_executors_own_directory_on_the_one_that_ran_it_else_on_every_one(
    store: Store,
) -> None:
    a, b = Fake(default=3), Fake({"t": ExecutorRejected("no such route")})
    r = retention(store, None, {"a": a, "b": b})
    assert await r._delete("t", {"t": "a"}, {}) == {
        "trial_id": "t",
        "freed_bytes": 3,
        "where": "executor",
        "executors": ["a"],
    }
    assert b.asked == []
    # Where it ran is not in the log: every executor is asked (the route is idempotent);
    # one that cannot delete is skipped from then on, the others count.
    payload = await r._delete("t", {}, {})
    assert payload is not None and payload["executors"] == ["a"] and payload["freed_bytes"] == 3
    await r._delete("u", {}, {})
    assert b.asked == ["t"]


@pytest.mark.parametrize(
    "error", [ExecutorBusy("in use (HTTP 409)"), ExecutorUnavailable("unreachable")]
)
async def test_in_use_or_unreachable_is_a_failure_to_retry(store: Store, error: Exception) -> None:
    r = retention(store, None, {"a": Fake({"t": error})})
    assert await r._delete("t", {"t": "a"}, {}) is None


async def test_a_store_that_cannot_be_deleted_from_is_a_failure_and_no_link_is_followed(
    store: Store, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    checkpoint(victim, "t", 10)
    link = tmp_path / "shared"
    os.symlink(victim, link)  # the shared root replaced by a link
    r = retention(store, str(link), {})
    assert await r._delete("t", {}, {}) is None
    assert (victim / "t" / "w.bin").stat().st_size == 10


async def test_an_executor_claiming_absurd_bytes_is_capped(store: Store) -> None:
    r = retention(store, None, {"a": Fake(default=2**70)})
    payload = await r._delete("t", {"t": "a"}, {})
    assert payload is not None and payload["freed_bytes"] == MAX_FREED_BYTES
    json.dumps(payload)


async def test_a_checkpoint_on_an_executor_no_longer_configured_is_left_and_not_logged(
    store: Store,
) -> None:
    a = Fake(default=3)
    r = retention(store, None, {"a": a})
    assert await r._delete("t", {"t": "gone"}, {}) == {}
    assert a.asked == []
