"""Tailing a trial's metrics file (JSON lines written by ``hbd.report``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# One metrics line is a handful of numbers; anything longer is not a report,
# and bounding it bounds the agent's memory per trial.
MAX_METRICS_LINE_BYTES = 64 * 1024
# Bytes read per poll: a trial that floods the file is caught up over several
# polls instead of in one unbounded read.
MAX_READ_BYTES_PER_POLL = 1024 * 1024


def parse_line(line: bytes) -> dict[str, float] | None:
    """A line's numeric, finite values (maybe none); None if it is not a JSON object."""
    try:
        raw = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    metrics: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # strings and the like are annotations, not metrics
        if math.isfinite(value):
            metrics[key] = float(value)
    return metrics


class MetricsTail:
    """Reads whole new lines from a growing file, remembering its offset."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read_new(self, *, final: bool = False) -> list[dict[str, float]]:
        """Parsed new complete lines; with ``final`` also a last unterminated one."""
        lines: list[bytes] = []
        while True:
            try:
                with open(self.path, "rb") as handle:
                    handle.seek(self._offset)
                    chunk = handle.read(MAX_READ_BYTES_PER_POLL)
            except FileNotFoundError:
                chunk = b""
            self._offset += len(chunk)
            data = self._partial + chunk
            *complete, self._partial = data.split(b"\n")
            lines.extend(complete)
            if len(self._partial) > MAX_METRICS_LINE_BYTES:
                log.warning("metrics line too long; skipped", path=str(self.path))
                self._partial = b""
            if not final or not chunk:
                break
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        parsed: list[dict[str, float]] = []
        for line in lines:
            if not line.strip():
                continue
            metrics = parse_line(line) if len(line) <= MAX_METRICS_LINE_BYTES else None
            if metrics is None:
                log.warning("malformed metrics line skipped", path=str(self.path), line=line[:200])
            elif metrics:
                parsed.append(metrics)
        return parsed
