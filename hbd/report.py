"""``hbd.report()``: the trial-side helper for reporting metrics.

A trial started by the hbd executor finds ``HBD_METRICS_FILE`` in its
environment; each call appends one JSON object on one line and makes it
durable before returning, so a result survives the trial being killed right
after. Imports only the standard library: trial code pays nothing for it.
"""

from __future__ import annotations

import json
import math
import os
import sys

METRICS_FILE_ENV = "HBD_METRICS_FILE"

_warned = False


def report(**metrics: float) -> None:
    """Append ``metrics`` (name -> number) as one line to ``$HBD_METRICS_FILE``.

    Outside an hbd trial (variable unset) this is a no-op that warns once on
    stderr. Non-numeric values raise ``TypeError`` here rather than being
    dropped silently by the executor. Non-finite values (a diverged loss) are
    not JSON: they are left out with a warning on stderr, so the trial keeps
    running and a metric that only ever diverged counts as never reported.
    """
    global _warned
    finite: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}")
        if math.isfinite(value):
            finite[name] = value
        else:
            print(f"hbd.report: metric {name!r} is {value!r}; not recorded", file=sys.stderr)
    if not finite:
        return
    path = os.environ.get(METRICS_FILE_ENV)
    if not path:
        if not _warned:
            _warned = True
            print(
                f"hbd.report: {METRICS_FILE_ENV} is not set; metrics are not recorded",
                file=sys.stderr,
            )
        return
    line = json.dumps(finite, separators=(",", ":"), allow_nan=False) + "\n"
    # One write() of one line on an O_APPEND descriptor: concurrent reporters
    # (e.g. data-loader processes) cannot interleave within a line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["report"]
