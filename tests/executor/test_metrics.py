"""MetricsTail: bounded, numbered metrics lines from a hostile file; trialfiles' safe reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hbd.executor import metrics as m
from hbd.executor.metrics import Line, MetricsTail, parse_line
from hbd.executor.trialfiles import NotRegularFile, open_regular, read_tail


def _all(tail: MetricsTail) -> list[Line]:
    out: list[Line] = []
    while True:
        lines, more = tail.read_batch(final=True)
        out += lines
        if not more:
            return out


def test_complete_lines_only_until_final_and_malformed_lines_take_no_seq(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read_batch() == ([], False)  # no file yet
    path.write_bytes(
        b'{"loss": 1}\nnot json\n[1]\n\n{"loss": NaN, "acc": 0.5, "tag": "x", "b": true}\n{"lo'
    )
    lines, _ = tail.read_batch()
    assert lines == [Line(1, {"loss": 1.0}), Line(2, {"acc": 0.5})]
    with open(path, "ab") as f:
        f.write(b'ss": 0.5}\n{"loss": 0.25}')
    assert tail.read_batch()[0] == [Line(3, {"loss": 0.5})]
    assert _all(tail) == [Line(4, {"loss": 0.25})]
    assert tail.seq == 4


@pytest.mark.parametrize(
    "line",
    [
        b'{"big": '
        + b"9" * 5000
        + b"}",  # beyond int's digit limit: ValueError, not JSONDecodeError
        b'{"big": 1' + b"0" * 400 + b"}",  # an int beyond a float
        b"[" * 50_000 + b"]" * 50_000,  # nesting: RecursionError
        b'{"x": 1e400}',  # infinity
        b'{"' + b"k" * 300 + b'": 1}',  # an over-long key
        b"\xff\xfe",
    ],
)
def test_hostile_values_are_dropped_without_an_exception(line: bytes) -> None:
    assert not parse_line(line)


def test_keys_beyond_the_cap_are_dropped_first_seen_win_and_the_metric_is_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "metrics.jsonl"
    with open(path, "w") as f:
        for step in range(30):
            row = {f"k{i}": step for i in range(100)}
            if step == 29:
                row["loss"] = 0.1  # the sweep's metric, first seen after the cap is full
            f.write(json.dumps(row) + "\n")
    tail = MetricsTail(path, metric="loss", max_keys=20)
    lines = _all(tail)
    assert len(lines) == 30
    assert all(len(line.metrics) <= 20 for line in lines)
    keys = set().union(*(line.metrics for line in lines))
    assert keys == {f"k{i}" for i in range(19)} | {"loss"}
    assert lines[-1].metrics["loss"] == 0.1


def test_a_big_file_is_read_in_bounded_chunks_up_to_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.jsonl"
    line = b'{"loss": 0.5}\n'  # 14 bytes
    path.write_bytes(line * 100_000)  # 1.4 MB
    reads: list[int] = []
    real = m.read_at

    def spy(p: Path, offset: int, limit: int) -> tuple[bytes, int]:
        data, size = real(p, offset, limit)
        reads.append(len(data))
        return data, size

    monkeypatch.setattr(m, "read_at", spy)
    tail = MetricsTail(path, max_file_bytes=140_000)
    batches = []
    while True:
        lines, more = tail.read_batch(final=True)
        batches.append(len(lines))
        if not more:
            break
    assert max(reads) <= m.READ_CHUNK_BYTES
    assert sum(reads) == 140_000  # never past the cap
    assert tail.capped and tail.seq == 10_000
    assert max(batches) <= m.READ_CHUNK_BYTES // len(line) + 1


def test_lines_can_be_read_again_from_any_seq_exactly_as_first_numbered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(m, "INDEX_EVERY_LINES", 7)
    monkeypatch.setattr(m, "READ_CHUNK_BYTES", 100)
    monkeypatch.setattr(m, "MAX_METRICS_LINE_BYTES", 150)
    path = tmp_path / "metrics.jsonl"
    with open(path, "wb") as f:
        for i in range(200):
            if i % 17 == 0:
                f.write(b"x" * 400 + b"\n")  # over-long: skipped, no seq
            elif i % 13 == 0:
                f.write(b"garbage\n")
            else:
                f.write(json.dumps({f"k{i % 9}": i, "loss": i}).encode() + b"\n")
        f.write(b'{"loss": -1}')  # unterminated last line
    tail = MetricsTail(path, metric="loss", max_keys=5)
    first = _all(tail)
    assert [x.seq for x in first] == list(range(1, len(first) + 1))
    assert first[-1] == Line(len(first), {"loss": -1.0})
    for after in range(len(first) + 1):
        for limit in (1, 4, 1000):
            assert tail.lines_after(after, limit) == first[after : after + limit]
    # A fresh tail (an agent restart) numbers the same file the same way.
    assert _all(MetricsTail(path, metric="loss", max_keys=5)) == first


def test_the_file_cap_setting_defaults_to_the_agents_constant() -> None:
    from hbd.settings import DEFAULT_MAX_METRICS_FILE_BYTES, ExecutorSettings

    assert DEFAULT_MAX_METRICS_FILE_BYTES == m.DEFAULT_MAX_METRICS_FILE_BYTES
    assert ExecutorSettings().max_metrics_file_bytes == m.DEFAULT_MAX_METRICS_FILE_BYTES


def test_fifo_symlink_and_directory_are_refused_unopened(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to("/dev/zero")
    for path in (fifo, link, tmp_path):
        with pytest.raises(NotRegularFile):
            os.close(open_regular(path))
        assert read_tail(path, 100) is None
        tail = MetricsTail(path)
        assert tail.read_batch(final=True) == ([], False)
        assert tail.refused is not None
    regular = tmp_path / "stderr.log"
    regular.write_text("a" * 50 + "tail")
    assert read_tail(regular, 4) == "tail"


def test_a_page_is_bounded_by_bytes_and_paging_still_reaches_every_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(m, "MAX_PAGE_BYTES", 50)
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"loss": i}) + "\n" for i in range(40)))
    tail = MetricsTail(path)
    every = _all(tail)
    got: list[Line] = []
    while len(got) < len(every):
        page = tail.lines_after(len(got), 1000)
        assert 1 <= len(page) <= 5  # 50 bytes: a few 11- or 12-byte lines
        got += page
    assert got == every


@pytest.mark.anyio
async def test_the_metrics_route_pages_lines_and_numbers_them_the_same_after_a_restart(
    tmp_path: Path,
) -> None:
    from tests.executor.helpers import running_agent, submission, wait_for

    work = tmp_path / "work"
    body = submission(tmp_path, "t1", "--mode=ok", "--steps=30")
    body["resource"]["value"] = 30
    async with running_agent(work) as client:
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        status = await wait_for(client, "t1")
        assert status["metrics_seq"] == 30
        page = (await client.get("/v1/trials/t1/metrics", params={"after": 10, "limit": 5})).json()
        assert page["last_seq"] == 30
        assert [x["seq"] for x in page["lines"]] == [11, 12, 13, 14, 15]
        assert [x["metrics"]["step"] for x in page["lines"]] == [10, 11, 12, 13, 14]
        assert (await client.get("/v1/trials/nope/metrics")).status_code == 404
        for bad in ({"after": -1}, {"after": 2**63}, {"limit": 0}, {"limit": 1001}):
            assert (await client.get("/v1/trials/t1/metrics", params=bad)).status_code == 422
    async with running_agent(work) as client:  # finished before this agent started
        again = (await client.get("/v1/trials/t1/metrics", params={"after": 10, "limit": 5})).json()
        assert again == page


@pytest.mark.anyio
async def test_callbacks_status_and_pages_say_which_run_of_the_trial_they_are(
    tmp_path: Path,
) -> None:
    """Review of 9.4: the daemon logs lines under the run they came from, so they carry it."""
    import httpx

    from hbd.protocol import TrialUpdate
    from tests.executor.helpers import running_agent, submission, wait_for, wait_until

    received: list[TrialUpdate] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        received.append(TrialUpdate.model_validate_json(request.content))
        return httpx.Response(204)

    work = tmp_path / "work"
    body = submission(tmp_path, "t1", "--mode=ok", callback_url="http://daemon.test/cb") | {
        "run": 2
    }
    async with running_agent(work, transport=httpx.MockTransport(handler)) as client:
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        assert (await wait_for(client, "t1"))["run"] == 2
        await wait_until(lambda: any(u.kind == "status" for u in received))
        page = (await client.get("/v1/trials/t1/metrics", params={"after": 0})).json()
        assert page["run"] == 2 and len(page["lines"]) == 3
    assert {u.run for u in received} == {2}
    assert {u.status.run for u in received if u.status is not None} == {2}
    async with running_agent(work) as client:  # the result on disk keeps its run
        assert (await client.get("/v1/trials/t1")).json()["run"] == 2
        again = (await client.get("/v1/trials/t1/metrics", params={"after": 0})).json()
        assert again["run"] == 2


def test_queued_callbacks_are_bounded_by_metric_values_not_only_by_count() -> None:
    from hbd.executor import callbacks
    from hbd.protocol import MetricsLine, TrialUpdate

    channel = callbacks.CallbackChannel("http://daemon.test/cb", None)
    wide = {f"k{i}": 1.0 for i in range(256)}
    batch = [MetricsLine(seq=i + 1, metrics=wide) for i in range(100)]  # 25,600 values
    for _ in range(10):
        channel.offer(TrialUpdate(kind="metrics", trial_id="t", sweep_id="s", seq=100, lines=batch))
    assert channel._pending_values <= callbacks.MAX_PENDING_METRIC_VALUES
    assert channel._pending_values == 3 * 25_600  # the 4th and later batches were dropped
    channel.close()
    channel._receive.close()  # its sender task never ran
