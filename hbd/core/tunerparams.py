"""``matrix.tuner.params`` of ``bohb``: the model's settings and when brackets open.

Its own module, imported only by a spec that sets ``tuner.params`` (and by the
search it builds), so that reading any other spec does not import the
model-based sampler (``hbd validate``'s start-up, tests/test_startup.py).
"""

from __future__ import annotations

from pydantic import Field

from hbd.core.limits import MAX_OPENING_LAG
from hbd.core.scheduler import DEFAULT_OPENING, BracketOrder
from hbd.core.tpe import BOHBSettings

__all__ = ["BOHBParams"]


class BOHBParams(BOHBSettings):
    """The model's settings (``BOHBSettings``), ``lag``, how many bracket
    positions a bracket's history lags behind it (docs/search.md: 0, the
    default, learns the most per budget; more keeps more slots busy), and
    ``order``, the brackets' order within an iteration (``Opening.order``:
    ascending after the first iteration, the default, refits the model within
    an iteration; ``hyperband`` keeps slots busier over several iterations)."""

    lag: int = Field(default=DEFAULT_OPENING.lag, ge=0, le=MAX_OPENING_LAG, strict=True)
    order: BracketOrder = DEFAULT_OPENING.order
