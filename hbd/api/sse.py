"""Server-Sent Events: every committed event, replayed from the log, then the live tail.

``GET /v1/events`` streams all sweeps, ``GET /v1/sweeps/{id}/events`` one.
Each frame's ``id:`` is the event's log ``seq``, ``event:`` its type and
``data:`` one JSON object ``{seq, sweep_id, type, trial_id, at, payload}``
(docs/events.md lists every type). Query: ``after=SEQ`` (the
``Last-Event-ID`` header wins over it), ``type=T`` (repeatable or
comma-separated), ``follow=false`` (stop at the current end of the log).

Replay then tail, without gap or repeat:

1. subscribe to the bus *first*, so every event committed from now on is in
   the subscription;
2. page through the log with ``read_after(cursor)``, moving the cursor;
3. drain the subscription, skipping ``seq <= cursor`` (what step 2 already
   read). The bus delivers in seq order (see hbd/daemon/bus.py), so the
   cursor only moves forward.

A subscriber whose bus buffer overflowed is marked ``behind`` by the bus and
no longer fed; its stream drops the subscription and goes back to step 1,
catching up from the log. So a slow consumer costs memory for one bounded
buffer and reads from SQLite, never the writer's time. A consumer that stops
reading altogether is disconnected once one write has waited
``SEND_STALL_SECONDS`` (the reason is logged: it would not read it).

A sweep's stream ends after the sweep's ``sweep.finished`` event, which it
sends whatever the type filter; asked again from at or beyond that event it
answers ``204 No Content``, which tells an EventSource not to reconnect.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import structlog
from fastapi import APIRouter, Header, HTTPException, Query
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hbd.core.events import SweepFinished
from hbd.core.limits import MAX_SQL_INT
from hbd.daemon.app import Daemon
from hbd.daemon.bus import Batch, Subscription
from hbd.daemon.lifecycle import EVENT_TYPES
from hbd.store.log import StoredEvent

log = structlog.get_logger(__name__)

# Comment line sent when nothing else was: proxies and load balancers close
# connections idle for 30-60 s (nginx proxy_read_timeout defaults to 60 s).
HEARTBEAT_SECONDS = 15.0
# The `retry:` field: how long an EventSource waits before reconnecting.
RETRY_MILLISECONDS = 2000
# Events read from the log per query while replaying or catching up: big
# enough to amortize the query, small enough to hold the store's lock briefly.
REPLAY_PAGE = 500
# A consumer whose socket has not taken one write in this long is stuck (a
# paused process, a dead peer the kernel has not noticed): disconnect it.
SEND_STALL_SECONDS = 30.0
# Open streams at once. Each holds one bus buffer (hbd/daemon/bus.py) of
# references to shared events, so this bounds the memory streams can take.
# Counted from when a stream is accepted to when it ends (not by the bus's
# subscriptions, which start only once the response does), so requests
# arriving together cannot all pass the check.
MAX_SUBSCRIBERS = 512
# Events sent in one write when a burst is waiting: one syscall for many
# frames keeps 100 subscribers cheap for the event loop the sweeps share.
MAX_EVENTS_PER_WRITE = 256
# Once a small commit arrives, wait this long for more before writing: a
# sweep's results trickle in, and one write per few commits keeps a hundred
# subscribers cheap. 20 ms measured no cheaper than 5 ms once a commit reached
# each stream as one shared batch (bench/stream.py).
COALESCE_SECONDS = 0.005
# A burst at least this large is written at once: it is already one write, and
# waiting would put it behind the work the same commit just started (a rung's
# dispatch), which is what made a submission's events the slowest to arrive.
COALESCE_BELOW_EVENTS = 32
# Encoded frames kept for reuse: every subscriber sends the same bytes for
# one event, so each is encoded once while the burst it came in is fanned out.
FRAME_CACHE_SIZE = 4096
# ...and at most this many bytes of them: events can be large (a submitted
# spec is up to max_spec_bytes, twice: text and JSON), and 4,096 of those
# would be gigabytes. 16 MiB holds thousands of ordinary events.
FRAME_CACHE_BYTES = 16 * 1024 * 1024
# A commit's frames are joined once and shared by every unfiltered stream
# only up to this size; a larger commit is written frame by frame.
MAX_SHARED_CHUNK_BYTES = 256 * 1024
# What one stream holds at once, in bytes: a replay page read from the log
# (its payloads) and one write to the socket. Issue 10.11: 60 streams replaying
# 40 sweeps with 900 KB names took a daemon from 129 MB to 2.9 GB when pages
# and writes were bounded by event count only.
STREAM_PAGE_BYTES = 1024 * 1024
MAX_WRITE_BYTES = 256 * 1024

SWEEP_FINISHED = SweepFinished.TYPE
EVENT_STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The bounds of the event streams; tests shorten them."""

    heartbeat: float = HEARTBEAT_SECONDS
    retry_ms: int = RETRY_MILLISECONDS
    page: int = REPLAY_PAGE
    send_stall: float = SEND_STALL_SECONDS
    max_subscribers: int = MAX_SUBSCRIBERS
    max_events_per_write: int = MAX_EVENTS_PER_WRITE
    coalesce: float = COALESCE_SECONDS
    page_bytes: int = STREAM_PAGE_BYTES
    write_bytes: int = MAX_WRITE_BYTES


# ---- encoding ----


def event_data(event: StoredEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "sweep_id": event.sweep_id,
        "type": event.type,
        "trial_id": event.trial_id,
        "at": event.at,
        "payload": event.payload,
    }


def encode_event(event: StoredEvent) -> bytes:
    """One SSE frame. JSON escapes newlines, so ``data:`` is always one line."""
    data = json.dumps(event_data(event), separators=(",", ":"), allow_nan=False)
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()


def encode_comment(text: str) -> bytes:
    return b"".join(b": " + line.encode() + b"\n" for line in text.splitlines() or [""]) + b"\n"


def encode_retry(milliseconds: int) -> bytes:
    return f"retry: {milliseconds}\n\n".encode()


class FrameCache:
    """Encoded frames by seq, and whole batches' frames, the oldest dropped first beyond ``size``.

    A commit reaches every subscriber as the same batch, so an unfiltered
    stream sends the same bytes: joined once, sent by all.
    """

    def __init__(self, size: int = FRAME_CACHE_SIZE, max_bytes: int = FRAME_CACHE_BYTES) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._frames: OrderedDict[int, bytes] = OrderedDict()
        self._chunks: OrderedDict[tuple[int, int, int], bytes | None] = OrderedDict()

    def chunk(self, batch: Sequence[StoredEvent]) -> bytes | None:
        """All frames of ``batch`` joined; None if it cannot be shared whole (it ends a
        sweep, where streams stop, or is larger than MAX_SHARED_CHUNK_BYTES)."""
        key = (batch[0].seq, batch[-1].seq, len(batch))
        if key in self._chunks:
            return self._chunks[key]
        chunk: bytes | None = None
        if not any(e.type == SWEEP_FINISHED for e in batch):
            frames, size = [], 0
            for event in batch:
                frames.append(self.frame(event))
                size += len(frames[-1])
                if size > MAX_SHARED_CHUNK_BYTES:
                    break
            else:
                chunk = b"".join(frames)
        self._chunks[key] = chunk
        self._bytes += len(chunk or b"")
        self._trim()
        return chunk

    def frame(self, event: StoredEvent) -> bytes:
        frame = self._frames.get(event.seq)
        if frame is None:
            frame = encode_event(event)
            if len(frame) <= self._max_bytes // 16:  # a huge frame would evict everything
                self._frames[event.seq] = frame
                self._bytes += len(frame)
                self._trim()
        return frame

    def _trim(self) -> None:
        while self._frames and (len(self._frames) > self._size or self._bytes > self._max_bytes):
            self._bytes -= len(self._frames.popitem(last=False)[1])
        while self._chunks and (len(self._chunks) > self._size or self._bytes > self._max_bytes):
            self._bytes -= len(self._chunks.popitem(last=False)[1] or b"")

    @property
    def bytes(self) -> int:
        """Bytes held (tests check the bound)."""
        return self._bytes


# ---- the stream ----


class EventStream:
    """The frames of one consumer's stream: replay from ``after``, then the tail."""

    def __init__(
        self,
        daemon: Daemon,
        *,
        after: int,
        sweep_id: str | None,
        types: frozenset[str] | None,
        follow: bool,
        limits: StreamLimits,
        cache: FrameCache,
    ) -> None:
        self.daemon = daemon
        self.cursor = after
        self.sweep_id = sweep_id
        self.types = types
        self.follow = follow
        self.limits = limits
        self.cache = cache
        self.catchups = 0
        # A sweep's stream must see its end even when the filter hides it.
        self._query_types = types if types is None or sweep_id is None else types | {SWEEP_FINISHED}
        self._ended = False

    def _take_batches(self, batches: Sequence[Sequence[StoredEvent]]) -> Iterator[bytes]:
        """Frames of the batches' events past the cursor; a whole fresh batch is shared."""
        for batch in batches:
            if self._ended:
                return
            shared = None
            if self.types is None and batch[0].seq > self.cursor:
                shared = self.cache.chunk(batch)
            if shared is not None:
                self.cursor = batch[-1].seq
                yield shared
            else:
                yield from self._take(batch)

    def _take(self, events: Collection[StoredEvent]) -> Iterator[bytes]:
        """Frames of the events past the cursor, encoded one at a time as they are written."""
        for event in events:
            if event.seq <= self.cursor:
                continue  # read from the log already: the bus repeats it
            self.cursor = event.seq
            if self.sweep_id is not None and event.type == SWEEP_FINISHED:
                # always sent: its id is the sweep's last seq, the 204 point for a reconnect
                self._ended = True
                yield self.cache.frame(event)
                return
            if self.types is None or event.type in self.types:
                yield self.cache.frame(event)

    def _writes(self, frames: Iterator[bytes]) -> Iterator[bytes]:
        """``frames`` grouped into writes of about ``write_bytes`` (a bigger frame goes alone)."""
        pending: list[bytes] = []
        size = 0
        for frame in frames:
            if pending and size + len(frame) > self.limits.write_bytes:
                yield b"".join(pending)
                pending, size = [], 0
            pending.append(frame)
            size += len(frame)
        if pending:
            yield b"".join(pending)

    async def frames(self) -> AsyncIterator[bytes]:
        yield encode_retry(self.limits.retry_ms)
        bus = self.daemon.bus
        while True:
            sub = bus.subscribe(self.sweep_id)  # first: nothing committed from now on is missed
            try:
                while True:  # replay from the log
                    page, more = await self.daemon.store.read_page(
                        self.cursor,
                        sweep_id=self.sweep_id,
                        types=self._query_types,
                        limit=self.limits.page,
                        max_bytes=self.limits.page_bytes,
                    )
                    for chunk in self._writes(self._take(page)):
                        yield chunk
                    del page  # the biggest thing a stream holds: not kept while it waits
                    if self._ended or not more:
                        break
                if self._ended or not self.follow:
                    return
                while not sub.behind:  # the live tail
                    batch = await self._next_batch(sub)
                    if batch is None:
                        return  # the daemon is stopping
                    if not batch:
                        yield encode_comment("heartbeat")
                        continue
                    for chunk in self._writes(self._take_batches(batch)):
                        yield chunk
                    del batch
                    if self._ended:
                        return
            finally:
                bus.unsubscribe(sub)
            # The subscription overflowed and the bus stopped feeding it: back to the log.
            self.catchups += 1
            log.info(
                "event stream behind; catching up from the log",
                sweep_id=self.sweep_id,
                cursor=self.cursor,
                catchups=self.catchups,
            )
            yield encode_comment(f"behind: catching up from the log after {self.cursor}")

    async def _next_batch(self, sub: Subscription) -> list[Batch] | None:
        """The commits the bus holds, waiting up to a heartbeat for the first; None at its end."""
        batches: list[Batch] = []
        with anyio.move_on_after(self.limits.heartbeat):
            try:
                batches.append(await sub.receive.receive())
            except anyio.EndOfStream:
                return None
        events = sum(len(b) for b in batches)
        if batches and self.limits.coalesce > 0 and events < COALESCE_BELOW_EVENTS:
            await anyio.sleep(self.limits.coalesce)
        while batches and events < self.limits.max_events_per_write:
            try:
                batches.append(sub.receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            events += len(batches[-1])
        return batches


class EventStreamResponse(Response):
    """A ``text/event-stream`` response that notices a disconnect while idle and
    gives up on a consumer whose socket takes nothing for ``send_stall`` seconds."""

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        *,
        send_stall: float,
        headers: Mapping[str, str],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.frames = frames
        self.send_stall = send_stall
        self.on_close = on_close
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch_disconnect(cancel: anyio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            cancel.cancel()

        complete = False
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_disconnect, tg.cancel_scope)
                await send(
                    {
                        "type": "http.response.start",
                        "status": self.status_code,
                        "headers": self.raw_headers,
                    }
                )
                async for chunk in self.frames:
                    with anyio.move_on_after(self.send_stall) as stall:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    if stall.cancelled_caught:
                        log.warning(
                            "event stream consumer stopped reading; disconnected",
                            stalled_for=self.send_stall,
                            path=scope.get("path"),
                        )
                        break
                else:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    complete = True
                tg.cancel_scope.cancel()
        except OSError:
            pass  # the consumer went away mid-write
        finally:
            try:
                aclose = getattr(self.frames, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
            finally:
                if self.on_close is not None:
                    self.on_close()
        if not complete:
            log.debug("event stream closed before its end", path=scope.get("path"))


# ---- routes ----


class StreamSlots:
    """Streams accepted and not yet ended, at most ``limit``.

    ``take`` and ``give_back`` run on the event loop without awaiting in
    between, so the check and the count are one step.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


def parse_types(values: list[str] | None) -> frozenset[str] | None:
    if not values:
        return None
    types = frozenset(t.strip() for v in values for t in v.split(",") if t.strip())
    unknown = sorted(types - EVENT_TYPES)
    if unknown:
        raise HTTPException(
            422,
            f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(sorted(EVENT_TYPES))}",
        )
    return types or None


def parse_cursor(after: int | None, last_event_id: str | None) -> int:
    """The seq to stream after: ``Last-Event-ID`` (a reconnect) wins over ``after``."""
    if last_event_id is not None and last_event_id.strip():
        try:
            seq = int(last_event_id.strip())
        except ValueError:
            raise HTTPException(
                422, f"Last-Event-ID must be an event seq, got {last_event_id[:40]!r}"
            ) from None
        if not 0 <= seq <= MAX_SQL_INT:
            raise HTTPException(422, f"Last-Event-ID must be an event seq in 0..{MAX_SQL_INT}")
        return seq
    return after or 0


# Seqs are SQLite integers: a larger `after` would overflow the query (a 200
# whose body was cut off), so it is refused with 422 like any bad value.
After = Annotated[
    int | None, Query(ge=0, le=MAX_SQL_INT, description="stream the events after this seq")
]
Types = Annotated[list[str] | None, Query(alias="type", description="only these event types")]
Follow = Annotated[bool, Query(description="false: stop at the current end of the log")]
LastEventId = Annotated[str | None, Header()]


def create_event_router(daemon: Daemon, limits: StreamLimits | None = None) -> APIRouter:
    limits = limits or StreamLimits()
    cache = FrameCache()
    router = APIRouter()

    slots = StreamSlots(limits.max_subscribers)

    def stream(
        sweep_id: str | None, cursor: int, types: frozenset[str] | None, follow: bool
    ) -> Response:
        if not slots.take():
            raise HTTPException(
                503,
                f"too many event streams open ({limits.max_subscribers})",
                headers={"Retry-After": str(max(1, limits.retry_ms // 1000))},
            )
        events = EventStream(
            daemon,
            after=cursor,
            sweep_id=sweep_id,
            types=types,
            follow=follow,
            limits=limits,
            cache=cache,
        )
        return EventStreamResponse(
            events.frames(),
            send_stall=limits.send_stall,
            headers=EVENT_STREAM_HEADERS,
            on_close=slots.give_back,
        )

    # status_code given: FastAPI's OpenAPI generator cannot infer it from this
    # response class (GET /openapi.json was a 500).
    @router.get("/v1/events", response_class=EventStreamResponse, status_code=200)
    async def all_events(
        after: After = None,
        types: Types = None,
        follow: Follow = True,
        last_event_id: LastEventId = None,
    ) -> Response:
        return stream(None, parse_cursor(after, last_event_id), parse_types(types), follow)

    @router.get("/v1/sweeps/{sweep_id}/events", response_class=EventStreamResponse, status_code=200)
    async def sweep_events(
        sweep_id: str,
        after: After = None,
        types: Types = None,
        follow: Follow = True,
        last_event_id: LastEventId = None,
    ) -> Response:
        cursor = parse_cursor(after, last_event_id)
        selected = parse_types(types)
        sweep = await daemon.store.get_sweep(sweep_id)
        if sweep is None:
            raise HTTPException(404, f"no sweep {sweep_id}")
        if sweep.finished and sweep.last_seq is not None and cursor >= sweep.last_seq:
            return Response(status_code=204)  # nothing will follow: EventSource stops here
        return stream(sweep_id, cursor, selected, follow)

    return router
