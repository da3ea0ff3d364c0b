"""The agent's side of metrics lines: read them off the loop, forward them in batches, serve pages.

Kept apart from ``agent.py`` so that the agent calls three functions and
knows nothing of chunks, seqs or pages. :class:`~hbd.executor.metrics.MetricsTail`
does the (blocking) reading; here every read goes through ``anyio.to_thread``.
"""

from __future__ import annotations

from pathlib import Path

import anyio

from hbd.executor.callbacks import CallbackChannel
from hbd.executor.metrics import MetricsTail
from hbd.protocol import (
    MAX_METRICS_PAGE_LINES,
    MetricsLine,
    MetricsPage,
    TrialStatus,
    TrialSubmission,
    TrialUpdate,
)


async def drain(
    tail: MetricsTail,
    status: TrialStatus,
    channel: CallbackChannel | None,
    submission: TrialSubmission,
    *,
    final: bool = False,
    to_end: bool = False,
) -> TrialStatus:
    """``status`` with the new lines' metrics merged: one chunk, or all with ``final``/``to_end``.

    Each chunk's lines are offered to ``channel`` (if any) in batches of at most
    MAX_METRICS_PAGE_LINES before the next chunk is read, so memory stays
    bounded by a chunk whatever the file's size.
    """
    while True:
        lines, more = await anyio.to_thread.run_sync(lambda: tail.read_batch(final=final))
        if lines:
            merged = dict(status.metrics)
            for line in lines:
                merged.update(line.metrics)
            status = status.model_copy(update={"metrics": merged, "metrics_seq": tail.seq})
            if channel is not None:
                for i in range(0, len(lines), MAX_METRICS_PAGE_LINES):
                    batch = lines[i : i + MAX_METRICS_PAGE_LINES]
                    channel.offer(
                        TrialUpdate(
                            kind="metrics",
                            trial_id=submission.id,
                            sweep_id=submission.sweep_id,
                            run=submission.run,
                            seq=batch[-1].seq,
                            lines=[MetricsLine(seq=x.seq, metrics=x.metrics) for x in batch],
                        )
                    )
        if not (more and (final or to_end)):
            return status


async def read_all(path: Path, metric: str | None, max_file_bytes: int) -> MetricsTail:
    """A finished trial's file numbered from the start (for pages after an agent restart)."""
    tail = MetricsTail(path, metric=metric, max_file_bytes=max_file_bytes)
    while (await anyio.to_thread.run_sync(lambda: tail.read_batch(final=True)))[1]:
        pass
    return tail


async def page(
    tail: MetricsTail, trial_id: str, after: int, limit: int, run: int = 1
) -> MetricsPage:
    """Lines with seq > ``after`` (at most ``limit``) among those ``tail`` (of ``run``) has read."""
    lines = await anyio.to_thread.run_sync(tail.lines_after, after, limit)
    return MetricsPage(
        trial_id=trial_id,
        lines=[MetricsLine(seq=x.seq, metrics=x.metrics) for x in lines],
        last_seq=tail.seq,
        run=run,
    )


__all__ = ["drain", "page", "read_all"]
