"""``hbd status --db``: an extended sweep's detail read without its daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hbd.cli.localdb import LocalSource
from hbd.store import open_store

pytestmark = pytest.mark.anyio

SPEC = Path(__file__).parents[2] / "examples" / "reference-fixed.yaml"


async def test_an_extended_sweep_read_with_db_counts_the_iterations_asked_for(
    tmp_path: Path,
) -> None:
    # Extended by 2 then 1 (hbd extend), none of the new iterations started yet:
    # the daemon's detail plans 4 iterations, and so does a read of its file.
    text = SPEC.read_text()
    data = yaml.safe_load(text)
    db = tmp_path / "hbd.db"
    async with await open_store(db) as store:
        submitted = {"name": "x", "spec": text, "spec_json": data, "seed": 1}
        await store.append("sw", [("sweep.submitted", submitted)], at=1.0)
        await store.append("sw", [("sweep.extended", {"iterations": 2})], at=2.0)
        await store.append("sw", [("sweep.extended", {"iterations": 1})], at=3.0)
    with LocalSource.open(str(db)) as source:
        detail = await source.sweep("sw")
    assert detail["iterations"] == 4
    assert sorted({b["iteration"] for b in detail["brackets"]}) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ({"opening": {"lag": 0, "order": "ascending-after-first"}}, [2, 1, 0, 0, 1, 2]),
        ({"opening": {"lag": 0, "order": "hyperband"}}, [2, 1, 0, 2, 1, 0]),
        ({"opening": {"lag": 0}}, [2, 1, 0, 2, 1, 0]),  # logged before the order was
        (None, [2, 1, 0, 2, 1, 0]),  # a random sweep: every bracket at once
        ({"opening": {"order": ["ascending-after-first"]}}, [2, 1, 0, 2, 1, 0]),  # junk
    ],
)
async def test_a_read_with_db_lists_the_brackets_in_the_order_the_log_recorded(
    tmp_path: Path, search: object, expected: list[int]
) -> None:
    text = SPEC.read_text()
    data = yaml.safe_load(text)
    data["matrix"].update(maxIterations=9, iterations=2)
    db = tmp_path / "hbd.db"
    async with await open_store(db) as store:
        submitted = {"name": "x", "spec": text, "spec_json": data, "seed": 1, "search": search}
        await store.append("sw", [("sweep.submitted", submitted)], at=1.0)
    with LocalSource.open(str(db)) as source:
        detail = await source.sweep("sw")
    assert [b["bracket"] for b in detail["brackets"]] == expected
    ascending = expected[3] == 0
    assert detail["bracket_order"] == ("ascending-after-first" if ascending else "hyperband")
