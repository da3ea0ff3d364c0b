"""The dispatch queue's order: deeper rungs first, first in first out among equals."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given
from hypothesis import strategies as st

from hbd.daemon.rungqueue import RungQueue


def test_deeper_rungs_first_and_fifo_within_a_rung() -> None:
    rung = {"a": 0, "b": 0, "c": 2, "d": 1, "e": 2}
    q = RungQueue(rung.__getitem__)
    for t in "abcde":
        q[t] = None
    assert list(q) == ["c", "e", "d", "a", "b"]
    q.move_to_end("b", last=False)  # a trial sent back goes to the head of its rung
    assert list(q) == ["c", "e", "d", "b", "a"]
    del q["e"]
    assert q.pop("zz") is None and q.pop("c") is None
    assert list(q) == ["d", "b", "a"] and len(q) == 3 and "a" in q and "c" not in q


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 3), st.integers(0, 3))))
def test_it_behaves_as_an_ordered_dict_sorted_by_priority(
    ops: list[tuple[str, int, int]],
) -> None:
    priority = {t: ord(t) % 3 for t in "abcdefgh"}
    q = RungQueue(priority.__getitem__)
    model: OrderedDict[str, None] = OrderedDict()
    for t, op, _ in ops:
        if op in (0, 1):
            q[t] = None
            model[t] = None
        elif op == 2:
            q.pop(t)
            model.pop(t, None)
        elif t in model:
            q.move_to_end(t, last=False)
            model.move_to_end(t, last=False)
        # Python's sort is stable: the model's order within each priority is kept.
        assert list(q) == sorted(model, key=lambda x: -priority[x])
        assert len(q) == len(model)
