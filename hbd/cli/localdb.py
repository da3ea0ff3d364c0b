"""``--db PATH``: answer ``status``, ``trials``, ``results`` and ``logs`` from a
database file, read-only, with no daemon running (as Optuna's CLI reads
``--storage``). It answers in the daemon API's JSON shapes (hbd.api.views), so
every command prints the same either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from hbd.cli.base import UserError
from hbd.core.vocabulary import TrialStatus


class Source(Protocol):
    """What the read commands need: hbd.client.Client, or LocalSource."""

    async def sweeps(self) -> list[dict[str, Any]]: ...
    async def sweep(self, sweep_id: str) -> dict[str, Any]: ...
    async def trials(self, sweep_id: str, **filters: Any) -> list[dict[str, Any]]: ...
    def events(
        self,
        sweep: str | None = None,
        *,
        after: int | None = None,
        types: Collection[str] | None = None,
        follow: bool = True,
    ) -> AsyncIterator[Any]: ...


class LocalSource:
    def __init__(self, db: Any) -> None:
        self.db = db

    @classmethod
    @contextmanager
    def open(cls, path: str) -> Iterator[LocalSource]:
        from hbd.errors import SchemaTooNew, StoreReadError
        from hbd.store.readonly import ReadOnlyDatabase

        try:
            db = ReadOnlyDatabase(Path(path))
        except FileNotFoundError:
            raise UserError(f"--db {path}: no such file") from None
        except (StoreReadError, SchemaTooNew) as exc:
            raise UserError(f"--db {exc}") from None
        try:
            yield cls(db)
        except StoreReadError as exc:
            raise UserError(f"--db {exc}") from None
        finally:
            db.close()

    async def _sweep_row(self, sweep_id: str) -> Any:
        from hbd.store import projections

        row = await projections.get_sweep(self.db, sweep_id)
        if row is None:
            raise UserError(f"no sweep {sweep_id} in {self.db.path}")
        return row

    async def sweeps(self) -> list[dict[str, Any]]:
        from hbd.api.views import sweep_summary
        from hbd.store import projections

        return [sweep_summary(s) for s in await projections.list_sweeps(self.db)]

    async def sweep(self, sweep_id: str) -> dict[str, Any]:
        from hbd.api.views import best_per_resource, sweep_detail
        from hbd.store import projections

        row = await self._sweep_row(sweep_id)
        order = await projections.bracket_order(self.db, sweep_id)
        succeeded = await projections.list_trials(self.db, sweep_id, status=TrialStatus.SUCCEEDED)
        per_resource = best_per_resource(succeeded, row, order)
        best = None
        if row.best_trial_id:
            best = await projections.get_trial(self.db, row.best_trial_id)
        elif not row.finished:  # running under a daemon (or interrupted): the best so far
            best = per_resource[-1] if per_resource else None
        asked = row.spec_json["matrix"].get("iterations", 1)
        iterations = await projections.planned_iterations(self.db, sweep_id, asked)
        return sweep_detail(
            row,
            await projections.rung_progress(self.db, sweep_id),
            await projections.trial_counts(self.db, sweep_id),
            best,
            None,
            checkpoints=await projections.checkpoint_summary(self.db, sweep_id),
            per_resource=per_resource,
            iterations=iterations,
            order=order,
        )

    async def trials(self, sweep_id: str, **filters: Any) -> list[dict[str, Any]]:
        from hbd.api.views import resource_type, trial_view
        from hbd.store import projections

        row = await self._sweep_row(sweep_id)
        wanted = {k: v for k, v in filters.items() if v is not None}
        rows = await projections.list_trials(self.db, sweep_id, **wanted)
        return [trial_view(t, resource_type(row)) for t in rows]

    async def events(
        self,
        sweep: str | None = None,
        *,
        after: int | None = None,
        types: Collection[str] | None = None,
        follow: bool = True,
    ) -> AsyncIterator[Any]:
        from hbd.client import Event

        if sweep is None:
            return
        for e in self.db.sweep_events(sweep, after=after or 0, types=types):
            yield Event(
                seq=e.seq,
                type=e.type,
                sweep_id=e.sweep_id,
                trial_id=e.trial_id,
                at=e.at,
                payload=e.payload,
            )
