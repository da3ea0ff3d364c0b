"""The executor backend seam: what the daemon needs from anything that runs trials.

The daemon speaks to every executor through this ``Protocol``; which class
serves a URL is chosen by its scheme (``backend_for``). ``http(s)://`` is the
reference agent's /v1 API (``hbd.daemon.executors.ExecutorClient``); another
engine (a Ray cluster, a batch scheduler) is one new module registered in
``BACKENDS``, imported only when a URL of its scheme is configured, so its
dependency stays an optional extra.

The contract every backend keeps (docs/executors.md says more):

- ``submit`` is idempotent by ``TrialSubmission.id`` and ``run``: the same
  submission again returns the same trial, never a second process.
- ``status`` raises ``NotFound`` for a trial the backend does not know, so the
  daemon can tell "never arrived" from "unreachable" (``ExecutorUnavailable``)
  after a restart and adopt what still runs.
- ``metrics`` pages a trial run's metrics lines by ``seq`` (1, 2, ...).
- ``cancel`` returns ``None`` for an unknown trial; finished ones unchanged.
- ``health`` reports slots (and devices) so that placement can count them.
- ``delete_checkpoint`` removes the trial's checkpoint the backend keeps
  (idempotent: 0 bytes when none is left); raises ``ExecutorBusy`` while it
  is in use (retried later), ``ExecutorRejected`` when the backend cannot
  delete checkpoints at all (retention then leaves them).
- Errors are hbd's own (``ExecutorUnavailable``, ``ExecutorRejected``,
  ``ExecutorBusy``, ``NotFound``), never a library's.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from hbd.errors import ConfigError
from hbd.http import EXECUTOR_BACKENDS as BACKENDS
from hbd.protocol import Health, MetricsPage, TrialStatus, TrialSubmission

__all__ = ["BACKENDS", "ExecutorBackend", "backend_for"]


@runtime_checkable
class ExecutorBackend(Protocol):
    """Runs trials somewhere; one instance per configured executor URL."""

    url: str

    def describe(self) -> str:
        """One line for logs, ``hbd doctor`` and ``/metrics`` (no secrets)."""
        ...

    async def submit(self, submission: TrialSubmission) -> TrialStatus: ...

    async def status(self, trial_id: str) -> TrialStatus: ...

    async def metrics(self, trial_id: str, *, after: int, limit: int) -> MetricsPage: ...

    async def cancel(self, trial_id: str) -> TrialStatus | None: ...

    async def logs(self, trial_id: str, stream: str, offset: int) -> dict[str, Any]: ...

    async def health(self, *, single: bool = False) -> Health: ...

    async def delete_checkpoint(self, trial_id: str) -> int:
        """Remove the trial's checkpoint here; the bytes freed (checkpoint retention)."""
        ...

    async def aclose(self) -> None: ...


def backend_for(url: str, **options: Any) -> ExecutorBackend:
    """The backend serving ``url``, built with ``options`` (token, transport...)."""
    scheme = urlsplit(url).scheme
    target = BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
        raise ConfigError(f"executor {url!r}: unknown scheme {scheme!r}; use {known}")
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    backend: ExecutorBackend = cls(url, **options)
    return backend
