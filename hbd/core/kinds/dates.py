"""The date kinds: ``daterange`` (days) and ``datetimerange`` (seconds)."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import Field, model_validator

from hbd.core.kinds.base import Value
from hbd.core.kinds.shared import Frozen

__all__ = ["DateRangeParam", "DateRangeValue", "DateTimeRangeParam", "DateTimeRangeValue"]


class DateRangeValue(Value):
    FIELDS = ("start", "stop", "step")
    KIND = "daterange"
    start: date
    stop: date
    step: int = Field(ge=1, description="days")

    @property
    def size(self) -> int:
        return -(-(self.stop - self.start).days // self.step)

    def at(self, i: int) -> date:
        return self.start + timedelta(days=i * self.step)

    @model_validator(mode="after")
    def _check(self) -> DateRangeValue:
        if self.start >= self.stop:
            raise ValueError(
                f"empty grid: start {self.start} must be before stop {self.stop} (exclusive)"
            )
        return self


_DATE_AHEAD = re.compile(r":(?=\s*\d{4}-\d{2}-\d{2})")


class DateTimeRangeValue(Value):
    FIELDS = ("start", "stop", "step")
    KIND = "datetimerange"
    start: datetime
    stop: datetime
    step: int = Field(ge=1, description="seconds")

    @classmethod
    def _split(cls, s: str) -> list[str]:
        # Datetimes contain colons, so "a:b:step" is split at the colon before
        # the second date and at the last colon, not at every colon.
        head, sep, step = s.rpartition(":")
        parts = _DATE_AHEAD.split(head) if sep else []
        return [*parts, step] if len(parts) == 2 else s.split(":")

    @property
    def size(self) -> int:
        us = (self.stop - self.start) // timedelta(microseconds=1)
        return -(-us // (self.step * 1_000_000))

    def at(self, i: int) -> datetime:
        return self.start + timedelta(seconds=i * self.step)

    @model_validator(mode="after")
    def _check(self) -> DateTimeRangeValue:
        if (self.start.tzinfo is None) != (self.stop.tzinfo is None):
            raise ValueError("start and stop must both have a timezone or both have none")
        if self.start >= self.stop:
            raise ValueError(
                f"empty grid: start {self.start} must be before stop {self.stop} (exclusive)"
            )
        return self


# ---------------------------------------------------------------- the kinds


class DateRangeParam(Frozen):
    kind: Literal["daterange"]
    value: DateRangeValue


class DateTimeRangeParam(Frozen):
    kind: Literal["datetimerange"]
    value: DateTimeRangeValue
