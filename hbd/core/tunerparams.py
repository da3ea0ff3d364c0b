"""``matrix.tuner.params`` of ``bohb``: the model's settings and when brackets open.

Its own module, imported only by a spec that sets ``tuner.params`` (and by the
search it builds), so that reading any other spec does not import the
model-based sampler (``hbd validate``'s start-up, tests/test_startup.py).
"""

from __future__ import annotations

from pydantic import Field

from hbd.core.limits import MAX_OPENING_LAG
from hbd.core.scheduler import DEFAULT_OPENING
from hbd.core.tpe import BOHBSettings

__all__ = ["BOHBParams"]


class BOHBParams(BOHBSettings):
    """The model's settings (``BOHBSettings``) and ``lag``, how many bracket
    positions a bracket's history lags behind it (docs/search.md: 0, the
    default, learns the most per budget; more keeps more slots busy)."""

    lag: int = Field(default=DEFAULT_OPENING.lag, ge=0, le=MAX_OPENING_LAG, strict=True)
