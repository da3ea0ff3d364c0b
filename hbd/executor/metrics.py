"""Tailing a trial's metrics file (JSON lines written by ``hbd.report``), with bounds.

The file is written by the trial, so everything about it is untrusted (see
``trialfiles`` for how it is opened). What is kept of it:

- **Lines.** Each non-blank line that is a JSON object with at least one
  finite number becomes one *metrics line* numbered ``seq`` 1, 2, 3... in
  file order. Other values (strings, lists) are annotations and skipped; a
  malformed line, a line longer than ``MAX_METRICS_LINE_BYTES`` and a line
  left with no metric are skipped and take no seq.
- **Keys.** At most ``MAX_METRIC_KEYS`` distinct keys per trial: the first
  ones seen in file order win, and the sweep's metric is always among them
  (it is admitted before any line is read). Later new keys are dropped from
  every line. Keys longer than ``MAX_METRIC_KEY_BYTES`` are dropped; values
  must be finite floats (huge integers, NaN, infinities are dropped).
- **Bytes.** At most ``max_file_bytes`` (default
  ``DEFAULT_MAX_METRICS_FILE_BYTES``, the agent's ``max_metrics_file_bytes``
  setting) of one file are ever parsed; the rest is ignored, with one warning.
  Each read is at most ``READ_CHUNK_BYTES``, so memory per trial is a chunk,
  one partial line and a sparse index, whatever the file's size.

Numbering is a pure function of the file's bytes and the bounds, so the
same lines get the same seqs after an agent restart, and any range of lines
can be read again from the file: :meth:`MetricsTail.lines_after` seeks to the
nearest point of a sparse index (every ``INDEX_EVERY_LINES`` lines or
``INDEX_EVERY_BYTES`` bytes) and re-parses from there. Filtering a re-read
line by the *current* key set gives the same result as it did when it was
first read, because a key is admitted at its first occurrence or never.

Every method does blocking file I/O: call them on a worker thread.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from hbd.executor.trialfiles import NotRegularFile, read_at
from hbd.protocol import MAX_METRIC_KEY_BYTES, MAX_METRIC_KEYS

log = structlog.get_logger(__name__)

# One metrics line is a handful of numbers; anything longer is not a report,
# and bounding it bounds the partial line kept between reads.
MAX_METRICS_LINE_BYTES = 64 * 1024
# How much of one metrics file is ever parsed (a 1.5 GB file once took the
# agent to 1.7 GB). 64 MiB is ~ a million lines of a dozen metrics.
DEFAULT_MAX_METRICS_FILE_BYTES = 64 * 1024 * 1024
# Bytes read at once. Also the most one poll forwards: at the agent's poll
# interval this is the forwarding rate limit (~640 KiB/s of metrics per
# trial), and the lines of one chunk fit in a few callback bodies.
READ_CHUNK_BYTES = 64 * 1024
# Sparse index of line starts, for re-reading a range of lines: at most this
# many lines or bytes are re-parsed to reach any line.
INDEX_EVERY_LINES = 1000
INDEX_EVERY_BYTES = 1024 * 1024
# Source bytes of the lines in one page of lines_after (at least one line is
# always returned): 1000 lines of up to 64 KiB each would make a 64 MB answer.
MAX_PAGE_BYTES = 256 * 1024
# Warnings about one file's bad lines: enough to diagnose, not a log flood.
MAX_WARNINGS_PER_FILE = 5

Metrics = dict[str, float]
_BEYOND = 2**63  # greater than any file offset


@dataclass(frozen=True, slots=True)
class Line:
    seq: int
    metrics: Metrics


def parse_line(line: bytes) -> Metrics | None:
    """A line's finite numeric values with bounded keys (maybe none); None if not a JSON object."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, >4300-digit ints, nesting
        return None
    if not isinstance(raw, dict):
        return None
    metrics: Metrics = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # strings and the like are annotations, not metrics
        if len(key.encode("utf-8", errors="replace")) > MAX_METRIC_KEY_BYTES:
            continue
        try:
            number = float(value)
        except OverflowError:  # an integer beyond a float
            continue
        if math.isfinite(number):
            metrics[key] = number
    return metrics


@dataclass
class _Keys:
    """The admitted keys: the metric first, then first-seen order, up to the cap."""

    cap: int
    admitted: set[str] = field(default_factory=set)
    dropped: bool = False

    def filter(self, metrics: Metrics, *, admit: bool) -> Metrics:
        out: Metrics = {}
        for key, value in metrics.items():
            if key not in self.admitted:
                if not admit or len(self.admitted) >= self.cap:
                    self.dropped = True
                    continue
                self.admitted.add(key)
            out[key] = value
        return out


class MetricsTail:
    """Numbered, bounded metrics lines of one growing file, read incrementally."""

    def __init__(
        self,
        path: Path,
        *,
        metric: str | None = None,
        max_file_bytes: int = DEFAULT_MAX_METRICS_FILE_BYTES,
        max_keys: int = MAX_METRIC_KEYS,
    ) -> None:
        if max_file_bytes < 0 or max_keys < 1:
            raise ValueError("max_file_bytes must be >= 0 and max_keys >= 1")
        self.path = path
        self.max_file_bytes = max_file_bytes
        self._lock = threading.Lock()
        self._keys = _Keys(cap=max_keys)
        if metric is not None:
            self._keys.admitted.add(metric)  # the sweep's metric is never dropped
        self._read_offset = 0  # bytes read from the file so far
        self._splitter = _LineSplitter(0)
        self.seq = 0  # lines numbered so far
        self._index: list[tuple[int, int]] = [(0, 0)]  # (seq before the line, line start)
        self._lines_since_index = 0
        self._warnings = 0
        self.capped = False  # max_file_bytes reached
        self.refused: str | None = None  # why the file cannot be read (FIFO, symlink...)
        self.finished = False  # read to its end with final=True

    # -- reading new lines ------------------------------------------------------

    def read_batch(self, *, final: bool = False) -> tuple[list[Line], bool]:
        """The lines completed by the next chunk of the file, and whether more may follow now.

        With ``final`` (the trial has exited) an unterminated last line counts
        too; call until the second value is False. At most one chunk is read.
        """
        with self._lock:
            if self.capped or self.refused is not None or self.finished:
                return [], False
            want = min(READ_CHUNK_BYTES, self.max_file_bytes - self._read_offset)
            if want <= 0:
                self._cap()
                return [], False
            try:
                chunk, _size = read_at(self.path, self._read_offset, want)
            except NotRegularFile as exc:
                self.refused = str(exc)
                log.warning(
                    "metrics file refused; no more metrics read",
                    path=str(self.path),
                    error=str(exc),
                )
                return [], False
            except OSError as exc:
                log.warning("metrics file unreadable", path=str(self.path), error=str(exc))
                return [], False
            self._read_offset += len(chunk)
            lines: list[Line] = []
            for raw, end in self._splitter.feed(chunk):
                self._take(raw, end, lines)
            more = bool(chunk)
            if self._read_offset >= self.max_file_bytes:
                self._cap()
                more = False
            elif final and not chunk:
                last = self._splitter.flush(self._read_offset)
                if last is not None:
                    self._take(*last, lines)
                self.finished = True
            return lines, more

    def _cap(self) -> None:
        if not self.capped:
            self.capped = True
            log.warning(
                "metrics file larger than the limit; the rest is ignored",
                path=str(self.path),
                max_file_bytes=self.max_file_bytes,
            )

    def _take(self, raw: bytes | None, end: int, out: list[Line]) -> None:
        """Number one complete line (ending at offset ``end``) if it carries metrics; index it."""
        metrics = self._parse(raw, admit=True)
        if metrics:
            self.seq += 1
            self._lines_since_index += 1
            out.append(Line(self.seq, metrics))
        # An over-long line gets a point of its own, so no re-read crosses it.
        if (
            self._lines_since_index >= INDEX_EVERY_LINES
            or end - self._index[-1][1] >= INDEX_EVERY_BYTES
            or raw is None
        ):
            self._index.append((self.seq, end))
            self._lines_since_index = 0

    def _parse(self, raw: bytes | None, *, admit: bool) -> Metrics | None:
        if raw is None:
            self._warn("metrics line too long; skipped", None)
            return None
        if not raw.strip():
            return None
        metrics = parse_line(raw)
        if metrics is None:
            self._warn("malformed metrics line skipped", raw)
            return None
        had_dropped = self._keys.dropped
        kept = self._keys.filter(metrics, admit=admit)
        if admit and self._keys.dropped and not had_dropped:
            log.warning(
                "trial reports more distinct metric keys than the limit; new keys dropped",
                path=str(self.path),
                max_keys=self._keys.cap,
            )
        return kept

    def _warn(self, message: str, raw: bytes | None) -> None:
        if self._warnings < MAX_WARNINGS_PER_FILE:
            self._warnings += 1
            line = None if raw is None else raw[:200]
            log.warning(message, path=str(self.path), line=line)

    # -- reading old lines again -------------------------------------------------

    def lines_after(self, after: int, limit: int) -> list[Line]:
        """Up to ``limit`` lines with seq > ``after`` among those read so far, in order."""
        with self._lock:
            if after >= self.seq or limit <= 0:
                return []
            # The last point at or before line ``after`` (the latest one among equals).
            i = bisect.bisect_right(self._index, (after, _BEYOND)) - 1
            seq, offset = self._index[i]
            end = self._splitter.line_start  # start of the first line not yet complete
            admitted = frozenset(self._keys.admitted)
            finished = self.finished
        keys = _Keys(cap=len(admitted), admitted=set(admitted))
        splitter = _LineSplitter(offset)
        out: list[Line] = []
        budget = MAX_PAGE_BYTES
        while offset < end and len(out) < limit and budget > 0:
            try:
                chunk, _ = read_at(self.path, offset, min(READ_CHUNK_BYTES, end - offset))
            except OSError:
                break
            if not chunk:
                break  # truncated behind our back
            offset += len(chunk)
            for raw, _end in splitter.feed(chunk):
                metrics = self._reparse(raw, keys)
                if metrics:
                    seq += 1
                    if seq > after:
                        out.append(Line(seq, metrics))
                        budget -= len(raw or b"")
                        if len(out) >= limit or budget <= 0:
                            break
        if finished and len(out) < limit and budget > 0:
            last = splitter.flush(end)
            if last is not None:
                metrics = self._reparse(last[0], keys)
                if metrics:
                    seq += 1
                    if seq > after:
                        out.append(Line(seq, metrics))
        return out

    @staticmethod
    def _reparse(raw: bytes | None, keys: _Keys) -> Metrics | None:
        if raw is None or not raw.strip():
            return None
        metrics = parse_line(raw)
        return None if metrics is None else keys.filter(metrics, admit=False)


class _LineSplitter:
    """Bytes in, complete lines out with the file offset just past each; bounded memory.

    A line longer than ``MAX_METRICS_LINE_BYTES`` comes out as None (its bytes
    are not kept).
    """

    def __init__(self, start: int) -> None:
        self.line_start = start  # file offset of the first byte of the incomplete line
        self._offset = start  # file offset of the next byte fed
        self._partial = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes | None, int]]:
        pos = 0
        while pos < len(chunk):
            nl = chunk.find(b"\n", pos)
            stop = len(chunk) if nl < 0 else nl
            if not self._skipping:
                self._partial += chunk[pos:stop]
                if len(self._partial) > MAX_METRICS_LINE_BYTES:
                    self._skipping = True
                    self._partial.clear()
            if nl < 0:
                self._offset += len(chunk) - pos
                return
            end = self._offset + (nl - pos) + 1
            line = None if self._skipping else bytes(self._partial)
            self._partial.clear()
            self._skipping = False
            self._offset = self.line_start = end
            pos = nl + 1
            yield line, end

    def flush(self, end: int) -> tuple[bytes | None, int] | None:
        """The unterminated last line, ending at file offset ``end``, if there is one."""
        if end <= self.line_start:
            return None
        line = None if self._skipping else bytes(self._partial)
        self._partial.clear()
        self._skipping = False
        self._offset = self.line_start = end
        return line, end
