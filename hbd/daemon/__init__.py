"""The daemon: the async shell that wires the pure core to the log and the executors.

Theory of operation
===================

The parts, and who owns which state (each piece of state has one owner)::

    app.Daemon          composition root: builds every part below and hands each
                        only the capabilities it needs; owns the runners by sweep
                        id, the root task group, and the API's surface (submit,
                        cancel, on_update, read-only views: pool, runners)
    runner.SweepRunner  one per unfinished sweep: owns its SweepMachine (core)
                        and its inbox; commits observations and the decisions
                        they cause in one transaction, THEN acts on them
    placement.Placement pure (no clock, no I/O, no anyio): owns every in-flight
                        trial's record (phase, executor, attempts, timestamps,
                        pending cancel, affinity) and every executor's slots,
                        GPU devices, health and cooldown. Events and ``now`` in,
                        actions out (Send, CancelOn, Poll, Fail, Lost, ...)
    dispatcher          anyio shell of placement: the placement loop, submits and
                        cancels over the backends, results back into placement
    reconciler          anyio shell of placement for time and restarts: health
                        checks, polling of silent trials, resume from the log
                        (adopt what still runs, send what never arrived)
    capacity            throttled ``capacity.idle`` notes, worded by the one
                        idle classifier (placement.IdleReason, also /metrics)
    metricsync          metrics lines in order, fetching what callbacks missed
    retention           checkpoint retention in its own task: when a rung is
                        decided or a sweep ends, deletes the checkpoints
                        hbd.core.retention lets go (executor route, shared path
                        or URL store) and logs ``checkpoint.deleted``; rebuilt
                        from the log, so never deleting twice
    backend             the ExecutorBackend Protocol; backend_for(url) picks the
                        class by URL scheme (executors: the http(s) agent client)
    store (hbd.store)   the event log: the truth; everything above is rebuilt
                        from it on start

Imports run one way: app -> reconciler -> dispatcher -> capacity -> placement,
app -> retention, and every shell -> runner -> metricsync; nothing imports app (tests/ guards
against any cycle, TYPE_CHECKING imports included).

The life of a trial
===================

1. The runner commits ``trial.scheduled`` (a StartTrial decision), then asks
   the daemon to place it: ``Placement.enqueue`` -> QUEUED, in scheduling order.
2. The dispatcher loop calls ``Placement.place(now)``: a trial whose sweep is
   under its ``concurrency`` goes to the usable executor with most free slots
   that also has the GPU devices it asks for (a resumed promotion only to its
   parent's executor; with shared checkpoints, there first if it is free, else
   anywhere) -> SENDING, holding a slot, and a ``Send`` action.
3. The dispatcher logs ``trial.sending`` (executor named) and waits for its
   commit, then submits it (the trial id is the idempotency key) and feeds
   the outcome back: accepted -> SENT (and ``trial.dispatched`` is logged);
   429 -> QUEUED at the head, executor busy; unreachable -> QUEUED again, pinned
   to that executor if the submit may have arrived, executor cooling down,
   failed after MAX_DISPATCH_ATTEMPTS; refused -> failed. A cancel while
   SENDING is kept and sent when the submit returns.
4. Results arrive by callback (``Daemon.on_update``) or by the reconciler's
   poll of a trial silent for SILENCE; either becomes one observation in the
   runner's inbox. An executor unreachable for ``lost_after`` makes its trials
   LOST: ``trial.lost`` then ``trial.failed``, and a cancel once it answers.
5. The runner commits the terminal event; only then does ``Placement.ended``
   free the slot and devices. Nothing of the trial is kept after its sweep ends.

After a restart nothing in placement survives: the reconciler replays each
unfinished sweep, tells placement where its trials were sent (``remember``,
``adopt``) and asks the executors before sending anything again. A trial
logged as sending but never as dispatched waits for that executor (up to
``lost_after``) rather than run twice; one never sent goes at once.
"""
