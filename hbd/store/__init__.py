"""hbd's database: the event log, its projections and the schema.

Nothing outside this package writes SQL. Open with :func:`open_store`::

    async with await open_store(path) as store:
        await store.append(sweep_id, [(EventType.SWEEP_SUBMITTED, {...})], at=clock.wall())
"""

from hbd.store.log import DEFAULT_READ_LIMIT, MAX_READ_LIMIT, Store, StoredEvent, open_store
from hbd.store.projections import SweepRow, TrialRow
from hbd.store.schema import CURRENT_VERSION

__all__ = [
    "CURRENT_VERSION",
    "DEFAULT_READ_LIMIT",
    "MAX_READ_LIMIT",
    "Store",
    "StoredEvent",
    "SweepRow",
    "TrialRow",
    "open_store",
]
