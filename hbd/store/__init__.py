"""hbd's database: the event log, its projections and the schema.

Nothing outside this package writes SQL. Open with :func:`open_store`::

    async with await open_store(path) as store:
        await store.append(sweep_id, [("sweep.submitted", {...})], at=clock.wall())
"""

from hbd.store.log import DEFAULT_READ_LIMIT, MAX_READ_LIMIT, Store, StoredEvent, open_store
from hbd.store.projections import (
    FINISHED_SWEEP_STATUSES,
    TERMINAL_TRIAL_STATUSES,
    SweepRow,
    TrialRow,
)
from hbd.store.schema import CURRENT_VERSION

__all__ = [
    "CURRENT_VERSION",
    "DEFAULT_READ_LIMIT",
    "FINISHED_SWEEP_STATUSES",
    "MAX_READ_LIMIT",
    "TERMINAL_TRIAL_STATUSES",
    "Store",
    "StoredEvent",
    "SweepRow",
    "TrialRow",
    "open_store",
]
