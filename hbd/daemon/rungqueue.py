"""The dispatch queue's order: higher ``StartTrial.priority`` first, first in first out among equals.

Deeper rungs go first (the priority is the rung), so a sweep has full-resource
results early instead of after every bracket's first rung (anytime results,
docs/search.md). Only when a trial starts changes, never what is decided.

A drop-in for the ``OrderedDict[str, None]`` the placement machine keeps: the
same operations (``in``, ``pop``, ``del``, assignment, ``move_to_end(...,
last=False)`` for a trial that goes back to the head, iteration in order), each
O(1) but iteration, with one ordered dict per priority: a sweep queues up to
``max_trial_runs`` trials, and a sort per placement would be O(n log n).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

__all__ = ["RungQueue"]


class RungQueue:
    def __init__(self, priority: Callable[[str], int]) -> None:
        self._priority = priority  # a trial's priority, read once when it is queued
        self._by: dict[int, OrderedDict[str, None]] = {}
        self._where: dict[str, int] = {}

    def __contains__(self, trial_id: object) -> bool:
        return trial_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def __iter__(self) -> Iterator[str]:
        for p in sorted(self._by, reverse=True):
            yield from self._by[p]

    def __setitem__(self, trial_id: str, _: None) -> None:
        if trial_id in self._where:
            return  # already queued: keeps its place, as an OrderedDict does
        p = self._priority(trial_id)
        self._where[trial_id] = p
        self._by.setdefault(p, OrderedDict())[trial_id] = None

    def __delitem__(self, trial_id: str) -> None:
        p = self._where.pop(trial_id)
        level = self._by[p]
        del level[trial_id]
        if not level:
            del self._by[p]

    def pop(self, trial_id: str, default: None = None) -> None:
        if trial_id in self._where:
            del self[trial_id]
        return default

    def move_to_end(self, trial_id: str, last: bool = True) -> None:
        """``last=False``: to the head of its priority (a retry goes first again)."""
        self._by[self._where[trial_id]].move_to_end(trial_id, last=last)
