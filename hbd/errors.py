"""Errors raised by the layers above the pure core (store, executors, daemon, api).

    HbdError                     abstract: every error hbd raises on purpose
    ├── StoreError               abstract: the database refused or failed an operation
    │   ├── StoreWriteError      a write failed (disk full, I/O error, read-only, locked);
    │   │                        the whole transaction was rolled back, nothing was written
    │   ├── StoreReadError       a read failed (I/O error, corrupt file, locked)
    │   ├── SchemaTooNew         the file was written by a newer hbd; nothing was changed
    │   └── ConflictError        a constraint refused the batch (a duplicate terminal or
    │                            scheduled event, a second submit of a sweep id, a change
    │                            to a finished trial); nothing of the batch was written
    ├── ExecutorError            abstract: talking to an executor failed
    │   ├── ExecutorUnavailable  unreachable, timed out or 5xx: retry with backoff;
    │   │   │                    ``maybe_sent`` says whether the request may have arrived
    │   │   └── ExecutorBusy     429: no free slot now; wait for one, not a failure
    │   └── ExecutorRejected     the executor answered but refused or answered nonsense
    ├── NotFound                 a sweep, trial or executor id that does not exist
    ├── NotReady                 the daemon is starting or stopping: try again later (503)
    └── ConfigError              bad settings (a key, its reason, where it came from);
                                 nothing was started

``hbd.core`` has its own tree (``hbd/core/errors.py``) because the core imports
nothing from here. sqlite3 exceptions are translated only in ``hbd/store/db.py``
and httpx exceptions only in ``hbd/daemon/executors.py``, always ``from exc`` so
the original stays in ``__cause__``.
"""

from __future__ import annotations

from typing import Any, Self


class HbdError(Exception):
    """Base of every error hbd raises on purpose. Abstract: raise a subclass."""

    # Abstract bases refuse direct instantiation (httpx does the same for
    # its base classes), so a caller can always tell what went wrong by type.
    _abstract: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass is concrete unless it says otherwise in its own body.
        cls._abstract = bool(cls.__dict__.get("_abstract", False))

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        if cls._abstract:
            raise TypeError(f"{cls.__name__} is abstract; raise one of its subclasses")
        return super().__new__(cls, *args, **kwargs)


class StoreError(HbdError):
    """The database refused or failed an operation. Abstract."""

    _abstract = True


class StoreWriteError(StoreError):
    """A write failed; the transaction was rolled back and nothing was written.

    Raised for disk full, I/O errors, a read-only file and a lock held past the
    busy timeout, so the daemon can stop a sweep's progress cleanly and retry
    once the fault is gone.
    """


class StoreReadError(StoreError):
    """A read failed (I/O error, corrupt file, lock held past the busy timeout)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer hbd; it was opened read-only and left as is."""

    def __init__(self, *, path: str, found: int, known: int) -> None:
        self.path = path
        self.found = found
        self.known = known
        super().__init__(
            f"database {path} has schema version {found}, but this hbd knows versions "
            f"up to {known}; upgrade hbd (the file was not changed)"
        )


class ConflictError(StoreError):
    """A constraint refused the batch; nothing of it was written.

    The usual cause is a repeat: a second terminal event for a trial, a second
    ``trial.scheduled`` for a trial id, a second ``sweep.submitted`` or
    ``sweep.finished`` for a sweep. Callers that may race (callback vs poll)
    catch this and drop the repeat.
    """


class ExecutorError(HbdError):
    """Talking to an executor failed. Abstract."""

    _abstract = True


class ExecutorUnavailable(ExecutorError):
    """The executor could not be reached, timed out or answered 5xx; retry later.

    ``maybe_sent`` is False only when no attempt got past connecting (a connect
    error or connect timeout): the executor cannot have acted on the request.
    Otherwise (a read timeout, a dropped connection, a 5xx) it may have, and a
    submit must be retried on the same executor only.
    """

    def __init__(self, message: str = "", *, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class ExecutorBusy(ExecutorUnavailable):
    """The executor answered 429: no free slot now. Not a fault: wait for a slot."""


class ExecutorRejected(ExecutorError):
    """The executor answered but refused the request or sent a malformed answer."""


class NotFound(HbdError):
    """A sweep, trial or executor id that does not exist."""


class NotReady(HbdError):
    """The daemon is starting (resuming sweeps) or shutting down; nothing was stored."""


class ConfigError(HbdError):
    """Bad settings: the message names the key, the reason and the value's source."""
