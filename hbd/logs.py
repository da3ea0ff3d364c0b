"""Logging for the services: structlog in front, stdlib logging (uvicorn's too) behind.

``configure`` is called once by ``hbd serve`` / ``hbd executor`` before
anything logs. Lines go to stderr (journald under systemd): JSON objects, one
per line, when stderr is not a terminal; readable key=value lines on one.

Every line that names a trial also names its sweep: trial ids are
``<sweep id>-s<bracket>-r<rung>-c<index>`` (``hbd.core.sweep.trial_id``), so
a processor fills ``sweep_id`` in from ``trial_id`` where the caller did not.
Known secrets (the bearer token) are replaced by ``***`` in every value of
every line, a last line of defence: nothing logs the token on purpose.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
REDACTED = "***"

_TRIAL_ID = re.compile(r"^(?P<sweep>.+)-s\d+-r\d+-c\d+$")
_HANDLER_NAME = "hbd"


def add_sweep_id(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    trial_id = event.get("trial_id")
    if "sweep_id" not in event and isinstance(trial_id, str):
        match = _TRIAL_ID.match(trial_id)
        if match:
            event["sweep_id"] = match.group("sweep")
    return event


class Redact:
    """Replace each secret by ``***`` wherever it appears in a line's values."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in secrets if s]

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self._clean(v) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        text = str(value)  # an object whose text the renderer would print
        return self._clean(text) if any(s in text for s in self.secrets) else value

    def __call__(self, _: WrappedLogger, __: str, event: EventDict) -> EventDict:
        if not self.secrets:
            return event
        return {k: v if k.startswith("_") else self._clean(v) for k, v in event.items()}


def configure(
    level: str = "info",
    fmt: str = "auto",
    *,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr) at ``level``."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    redact = Redact(secrets)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_sweep_id,
    ]
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # tracebacks become text, then get redacted
            redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # A line per HTTP request (every poll of `hbd watch`) is noise at info;
    # it is there at debug. uvicorn's own errors keep the chosen level.
    logging.getLogger("uvicorn.access").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING
    )
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # httpx logs every request at info, with its URL; keep that for debug.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    # Libraries that log every statement or poll at debug: ours is the debug level wanted.
    for name in ("httpcore", "aiosqlite", "asyncio", "multipart"):
        logging.getLogger(name).setLevel(logging.INFO)


def reset() -> None:
    """Undo :func:`configure` (tests)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    structlog.reset_defaults()
