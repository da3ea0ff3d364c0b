"""``GET /metrics``: the daemon's state in the Prometheus text format.

Each daemon has its own ``CollectorRegistry`` (not prometheus-client's global
one), so several daemons can live in one process (tests) without clashing.
Gauges are refreshed from the store and the daemon's memory on each scrape:
a scrape every 15 s costs two ``GROUP BY`` queries and a ``count(*)``.

    hbd_info{version}                               1
    hbd_sweeps{state}                               sweeps by projected status
    hbd_trials{state}                               trials by status
    hbd_dispatch_latency_seconds                    histogram: queued after the
                                                    scheduling commit -> accepted
                                                    by an executor
    hbd_queued_trials                               trials waiting for a slot
    hbd_executor_up{executor}                       1 if its last health check answered
    hbd_executor_slots{executor}                    slots it reported
    hbd_executor_slots_used{executor}               slots held by our trials
    hbd_idle_slots{reason}                          free slots and why they are free
    hbd_event_log_events                            rows in the event log
    hbd_subscribers                                 live event-stream subscribers
    hbd_checkpoints_deleted_total                   checkpoints retention deleted (since start)
    hbd_checkpoint_bytes_freed_total                bytes those deletions freed
    hbd_checkpoint_delete_failures_total            retention passes with a deletion that
                                                    failed (in use, executor away), retried
    hbd_checkpoint_bytes_kept                       bytes of kept checkpoints, where the
                                                    daemon can measure them (shared/URL store)

Idle reasons are :class:`hbd.daemon.placement.IdleReason`, the words the
``capacity.idle`` events use, from the same classifier: ``no_executor``
(unhealthy or cooling down after a failure), ``concurrency_cap`` (trials
wait, but their sweeps are at their ``concurrency``), ``gpu`` (trials wait
for free GPU devices), ``affinity`` (a promoted trial waits for its parent's
executor), ``rung_barrier`` (nothing waits; running trials must end before a
rung can be decided), ``no_work`` (nothing to run).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from hbd.core.vocabulary import SweepStatus, TrialStatus
from hbd.daemon.app import Daemon
from hbd.daemon.placement import IdleReason, idle_slots
from hbd.version import __version__

# Dispatch is a local queue plus one HTTP round trip: milliseconds when a
# slot is free, up to minutes when every slot is busy.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# The sweep statuses the daemon writes (a cancelled sweep ends "stopped").
SWEEP_STATES = (SweepStatus.RUNNING, SweepStatus.SUCCEEDED, SweepStatus.STOPPED, SweepStatus.FAILED)
TRIAL_STATES = tuple(TrialStatus)
IDLE_REASONS = tuple(r.value for r in IdleReason)


class DaemonMetrics:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.registry = r = CollectorRegistry(auto_describe=True)
        Gauge("hbd_info", "hbd build information", ["version"], registry=r).labels(__version__).set(
            1
        )
        self.sweeps = Gauge("hbd_sweeps", "Sweeps by state", ["state"], registry=r)
        self.trials = Gauge("hbd_trials", "Trials by state", ["state"], registry=r)
        self.dispatch_latency = Histogram(
            "hbd_dispatch_latency_seconds",
            "Seconds from a trial's scheduling commit to an executor accepting it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queued = Gauge("hbd_queued_trials", "Trials waiting for an executor slot", registry=r)
        self.up = Gauge(
            "hbd_executor_up",
            "1 if the executor answered its last health check",
            ["executor"],
            registry=r,
        )
        self.slots = Gauge(
            "hbd_executor_slots", "Slots the executor reported", ["executor"], registry=r
        )
        self.used = Gauge(
            "hbd_executor_slots_used",
            "Slots held by this daemon's trials",
            ["executor"],
            registry=r,
        )
        self.idle = Gauge(
            "hbd_idle_slots",
            "Free executor slots by the reason they are free",
            ["reason"],
            registry=r,
        )
        self.events = Gauge("hbd_event_log_events", "Events in the event log", registry=r)
        self.subscribers = Gauge("hbd_subscribers", "Live event-stream subscribers", registry=r)
        self.write_failures = Counter(
            "hbd_store_write_failures",
            "Writes of the event log that failed (disk full, I/O error, permission)",
            registry=r,
        )
        self._write_failures_seen = 0
        self.writable = Gauge(
            "hbd_store_writable", "1 if the last write of the event log succeeded", registry=r
        )
        daemon.dispatcher.on_dispatched = self.dispatch_latency.observe
        # ckpt helper: checkpoint retention (hbd.daemon.retention), counted since start.
        self.ckpt_deleted = Counter(
            "hbd_checkpoints_deleted", "Checkpoints deleted by retention", registry=r
        )
        self.ckpt_freed = Counter(
            "hbd_checkpoint_bytes_freed", "Bytes freed by deleting checkpoints", registry=r
        )
        self.ckpt_failures = Counter(
            "hbd_checkpoint_delete_failures",
            "Retention passes in which a deletion failed (retried later)",
            registry=r,
        )
        self._ckpt_seen = (0, 0, 0)
        self.ckpt_kept = Gauge(
            "hbd_checkpoint_bytes_kept",
            "Bytes of the checkpoints sweeps keep, where measured (shared path or URL store)",
            registry=r,
        )

    async def refresh(self) -> None:
        daemon = self.daemon
        sweeps, trials = await daemon.store.status_counts()
        for state in {*SWEEP_STATES, *sweeps}:
            self.sweeps.labels(state).set(sweeps.get(state, 0))
        for state in {*TRIAL_STATES, *trials}:
            self.trials.labels(state).set(trials.get(state, 0))
        self.events.set(await daemon.store.event_count())
        self.subscribers.set(daemon.bus.subscribers)
        store = daemon.store.write_health
        self.write_failures.inc(store.failures_total - self._write_failures_seen)
        self._write_failures_seen = store.failures_total
        self.writable.set(1 if store.ok else 0)
        queued = daemon.dispatcher.queued()
        self.queued.set(queued)

        for metric in (self.up, self.slots, self.used):
            metric.clear()  # executors are fixed at start, but never report a stale label
        for e in daemon.pool.executors.values():
            self.up.labels(e.name).set(1 if e.healthy else 0)
            self.slots.labels(e.name).set(e.slots)
            self.used.labels(e.name).set(e.used)
        for reason, n in idle_slots(daemon.placement, daemon.clock.monotonic()).items():
            self.idle.labels(reason.value).set(n)
        stats = daemon.retention.stats
        now = (stats.deleted, stats.freed_bytes, stats.failures)
        for counter, new, seen in zip(
            (self.ckpt_deleted, self.ckpt_freed, self.ckpt_failures),
            now,
            self._ckpt_seen,
            strict=True,
        ):
            counter.inc(new - seen)
        self._ckpt_seen = now
        self.ckpt_kept.set(sum(daemon.retention.kept_bytes.values()))

    async def render(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)


def metrics_router(daemon: Daemon) -> APIRouter:
    metrics = DaemonMetrics(daemon)
    router = APIRouter()

    @router.get("/metrics", summary="Prometheus metrics (text format)")
    async def get_metrics() -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
