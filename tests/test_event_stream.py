"""hbd.client.EventStream: the reconnect policy both clients share, without I/O."""

from __future__ import annotations

import json

import pytest

from hbd.client import (
    MAX_FAILED_RECONNECTS,
    RECONNECT_DELAY_CAP_SECONDS,
    RECONNECT_DELAY_SECONDS,
    ClientError,
    EventStream,
)


def _lines(seq: int, type_: str = "trial.metrics") -> list[str]:
    body = {"seq": seq, "type": type_, "sweep_id": "s", "trial_id": None, "at": 1.0}
    return [f"id: {seq}", f"event: {type_}", f"data: {json.dumps(body)}", ""]


def _feed(stream: EventStream, lines: list[str]) -> list[int]:
    return [e.seq for line in lines if (e := stream.feed(line)) is not None]


def test_it_resumes_after_the_last_event_seen() -> None:
    stream = EventStream("http://d", None, after=None, types=["trial.metrics"], follow=True)
    assert stream.path == "/v1/events"
    assert stream.params == [("type", "trial.metrics")]
    assert stream.headers() == {}
    assert stream.answer(200) == "read"
    assert _feed(stream, [": heartbeat", *_lines(4), *_lines(5)]) == [4, 5]
    assert stream.retry() == 0.0  # it was working: reconnect at once
    assert stream.headers() == {"Last-Event-ID": "5"}


def test_empty_attempts_back_off_then_give_up_naming_the_problem() -> None:
    notes: list[str] = []
    stream = EventStream("http://d", "s1", after=0, types=None, follow=True, on_retry=notes.append)
    waits = []
    for _ in range(MAX_FAILED_RECONNECTS - 1):
        stream.headers()
        assert stream.answer(503) == "retry"
        waits.append(stream.retry())
    assert waits[:4] == [RECONNECT_DELAY_SECONDS * f for f in (1, 2, 4, 8)]
    assert max(waits) == RECONNECT_DELAY_SECONDS * 8
    stream.headers()
    stream.broken(ConnectionResetError("reset by peer"))
    with pytest.raises(ClientError, match=r"ConnectionResetError: reset by peer.*8 tries"):
        stream.retry()
    assert len(notes) == MAX_FAILED_RECONNECTS
    assert notes[0] == f"HTTP 503 (attempt 1 of {MAX_FAILED_RECONNECTS})"


def test_an_event_resets_the_failure_count() -> None:
    stream = EventStream("http://d", None, after=None, types=None, follow=True)
    for _ in range(MAX_FAILED_RECONNECTS - 1):
        stream.headers()
        stream.retry()
    stream.headers()
    _feed(stream, _lines(1))
    assert stream.retry() == 0.0 and stream.failures == 0


@pytest.mark.parametrize(
    ("status", "todo"),
    [
        (204, "done"),
        (200, "read"),
        (404, "refused"),
        (401, "refused"),
        (429, "retry"),
        (500, "retry"),
    ],
)
def test_what_each_answer_means(status: int, todo: str) -> None:
    assert EventStream("u", "s", after=None, types=None, follow=True).answer(status) == todo


def test_the_servers_retry_advice_is_capped() -> None:
    stream = EventStream("u", None, after=None, types=None, follow=False)
    assert ("follow", "false") in stream.params
    stream.headers()
    stream.feed("retry: 3600000")
    assert stream.retry() == RECONNECT_DELAY_CAP_SECONDS
    stream.feed("retry: 2000")
    assert stream.retry() == 2.0 * 2


def test_a_sweeps_stream_ends_with_its_finish() -> None:
    stream = EventStream("u", "s", after=None, types=None, follow=True)
    stream.headers()
    (finish,) = [e for line in _lines(9, "sweep.finished") if (e := stream.feed(line))]
    assert stream.ends_with(finish)
    assert not EventStream("u", None, after=None, types=None, follow=True).ends_with(finish)
