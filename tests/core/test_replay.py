"""The log is authoritative: a replay re-derives each logged decision or stops, naming it."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from hbd.core.errors import CoreError, ReplayDiverged
from hbd.core.replay import replay

GOLDEN = sorted((Path(__file__).parent.parent / "golden").glob("*.jsonl"))


@dataclass(frozen=True)
class Event:
    seq: int
    type: str
    payload: dict[str, Any]


def golden(name: str) -> list[Event]:
    lines = (Path(__file__).parent.parent / "golden" / f"{name}.jsonl").read_text().splitlines()
    return [
        Event(seq=i, type=r["type"], payload=r["payload"])
        for i, r in enumerate(map(json.loads, lines), 1)
    ]


def first(events: list[Event], type_: str, skip: int = 0) -> int:
    """The list position of the ``skip``-th event of ``type_``."""
    return [i for i, e in enumerate(events) if e.type == type_][skip]


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_every_golden_log_replays_without_divergence(path: Path) -> None:
    machine = replay("golden", golden(path.stem))
    assert machine.finished is not None


def test_an_altered_config_names_the_seq_and_both_values() -> None:
    # What an installed numpy drawing other numbers looks like from the log's side.
    events = golden("r27-eta3-failures-resume")
    i = first(events, "trial.scheduled", skip=3)
    logged = {**events[i].payload["config"], "x": 0.123}
    derived = events[i].payload["config"]
    events[i] = replace(events[i], payload={**events[i].payload, "config": logged})
    with pytest.raises(ReplayDiverged) as caught:
        replay("golden", events)
    err = caught.value
    assert isinstance(err, CoreError)  # the daemon's UNRESUMABLE path catches it
    assert err.seq == events[i].seq
    assert err.logged == logged and err.derived == derived
    assert f"seq {events[i].seq}" in str(err) and "config" in str(err)
    assert "0.123" in str(err) and repr(derived["x"]) in str(err)


def test_an_altered_promotion_names_the_rung_decision() -> None:
    events = golden("r27-eta3-failures-resume")
    i = next(i for i, e in enumerate(events) if e.type == "rung.decided" and e.payload["promoted"])
    promoted = events[i].payload["promoted"]
    altered = [*promoted[1:], "golden-s3-r0-c26"]
    events[i] = replace(events[i], payload={**events[i].payload, "promoted": altered})
    with pytest.raises(ReplayDiverged, match=f"seq {events[i].seq}.*promoted") as caught:
        replay("golden", events)
    assert caught.value.logged == altered and caught.value.derived == promoted


def test_an_altered_resource_or_parent_is_caught() -> None:
    events = golden("r27-eta3-failures-resume")
    i = next(i for i, e in enumerate(events) if e.type == "trial.scheduled" and e.payload["parent"])
    for name, value in [("resource", 1000), ("parent", "golden-s3-r0-c0-other")]:
        altered = list(events)
        altered[i] = replace(events[i], payload={**events[i].payload, name: value})
        with pytest.raises(ReplayDiverged, match=f"seq {events[i].seq}.*{name}") as caught:
            replay("golden", altered)
        assert caught.value.logged == value


def test_a_missing_scheduled_event_is_caught_where_it_should_have_been() -> None:
    events = golden("r27-eta3-failures-resume")
    i = first(events, "trial.scheduled", skip=5)
    gone = events.pop(i)
    with pytest.raises(ReplayDiverged, match=gone.payload["trial_id"]) as caught:
        replay("golden", events)
    # The next scheduled trial is met in its place: its seq, and the ids differ.
    assert caught.value.seq == events[i].seq
    assert caught.value.derived == gone.payload["trial_id"]


def test_decisions_missing_at_the_end_of_the_log_are_caught() -> None:
    events = golden("r27-eta3-failures-resume")
    last = max(i for i, e in enumerate(events) if e.type == "trial.scheduled")
    del events[last:]
    with pytest.raises(ReplayDiverged, match="missing from the log") as caught:
        replay("golden", events)
    assert caught.value.logged is None and caught.value.derived is not None


def test_a_missing_result_leaves_a_logged_rung_decision_underived() -> None:
    events = golden("r27-eta3-failures-resume")
    i = first(events, "trial.succeeded")
    del events[i]
    decided = first(events, "rung.decided")
    with pytest.raises(ReplayDiverged, match="not derived") as caught:
        replay("golden", events)
    assert caught.value.seq == events[decided].seq and caught.value.derived is None


def test_a_log_not_starting_with_its_submission_is_refused() -> None:
    events = golden("r9-user-stop")
    with pytest.raises(ReplayDiverged, match="first event"):
        replay("golden", events[1:])
    with pytest.raises(ReplayDiverged, match="first event"):
        replay("golden", [])


def test_a_huge_config_is_shown_cut_in_the_message_but_kept_whole() -> None:
    events = golden("r9-user-stop")
    i = first(events, "trial.scheduled")
    big = {"x": "v" * 10_000}
    events[i] = replace(events[i], payload={**events[i].payload, "config": big})
    with pytest.raises(ReplayDiverged) as caught:
        replay("golden", events)
    assert caught.value.logged == big
    assert len(str(caught.value)) < 2_000 and "characters cut" in str(caught.value)
