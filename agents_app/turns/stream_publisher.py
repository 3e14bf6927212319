"""Publishing a turn's chunks: one sequence, batched to the channel layer and the chunk log.

Hot path: a chunk is appended to an in-memory list and a flusher task sends whatever has
accumulated in one channel-layer message, so a fast model costs one group_send per batch
rather than per token. Consecutive deltas of the same part that have not been sent yet are
merged (the protocol allows it, and the stored body is the merged one, exactly as broadcast).
The chunk log is written in batches of up to `STORE_BATCH` chunks or every `STORE_INTERVAL`:
a paced stream (50 tokens/s) costs one write per second, not one per few tokens. A write
runs beside the broadcasting: with many turns writing, one can wait seconds for the database,
and the frames do not wait with it. The log
serves resumes, HTTP followers and recovery; WebSocket clients get the live frames. An HTTP
follower of a turn streaming in this process gets its chunks as they are broadcast (a
`LiveTail`) and reads the log only for those it joined too late for; while one follows a
turn, that turn is stored every `FOLLOWED_STORE_INTERVAL` instead (see `followed`).

Under load, frames are coalesced: every frame costs the same serialisation, channel-layer
hop, consumer dispatch and socket write whatever it carries, so with many streams in the
process a flush waits a few milliseconds more (`coalescing_window`) for the next deltas to
merge into it. One stream alone is never held back; the first model output never is.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import weakref
from collections.abc import Iterator
from typing import Any

from django.utils import timezone

from agents_app.protocol import frames
from agents_app.turns import broadcast
from agents_app.storage import chunk_log, query_count, row_writes
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Turn
from agents_app.testing import faults, timeline

STORE_BATCH = 64
STORE_INTERVAL = 1.0
FOLLOWED_STORE_INTERVAL = 0.1
# The live tails of the turns HTTP followers of this process follow, by turn id.
_followers: dict[int, list[LiveTail]] = {}
# Each stream beyond the first widens the coalescing window by this much, up to the maximum:
# at 50 streams a frame carries ~50 ms of deltas (2–3 tokens at a model's pace), which a
# reader does not notice and which halves the per-frame work of the whole process.
COALESCE_PER_STREAM = 0.001
MAX_COALESCE = 0.05
# The publishers of this process between begin() and broadcast_all(), by turn id.
_streaming: dict[int, StreamPublisher] = {}


def coalescing_window() -> float:
    """How long a flush waits for more deltas, given how many streams this process serves."""
    return min(MAX_COALESCE, COALESCE_PER_STREAM * max(0, len(_streaming) - 1))


_MERGEABLE = frozenset({"text-delta", "reasoning-delta"})
# What the model produced (as opposed to the frames that open a message or a step).
_MODEL_OUTPUT = frozenset({"text-delta", "reasoning-delta", "tool-input-start", "tool-input-available"})


@contextlib.contextmanager
def followed(turn_id: int) -> Iterator[LiveTail]:
    """While this block runs, turn `turn_id`, if it streams in this process, hands the chunks
    it broadcasts to the tail this yields, and is stored at a follower's pace."""
    tail = LiveTail()
    _followers.setdefault(turn_id, []).append(tail)
    publisher = _streaming.get(turn_id)
    if publisher is not None:  # what it broadcast before, as far as the log does not hold it yet
        tail.feed(publisher.unstored())
        publisher.store_sooner()
    try:
        yield tail
    finally:
        tails = _followers[turn_id]
        tails.remove(tail)
        if not tails:
            del _followers[turn_id]


# Timeouts of the waits below end on the event loop's ticks, every TICK seconds: one timer per
# tick settles every wait due by then. A coalescing flush waits once per frame of every
# stream, and asyncio keeps its timers in a heap ordered by a Python-level comparison: with a
# timer per wait, hundreds of streams made thousands a second, each pushed and popped
# through a dozen comparisons. A wait ends up to a tick late.
TICK = 0.002


class _Ticks:
    """The waits of one event loop due on each tick, and one timer per tick that has some."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[int, list[asyncio.Future[None]]] = {}

    def settle_after(self, seconds: float, waiter: asyncio.Future[None]) -> None:
        """Resolve `waiter` once `seconds` have passed, unless something resolved it first."""
        tick = math.ceil((self._loop.time() + seconds) / TICK)
        waiters = self._due.get(tick)
        if waiters is None:
            waiters = self._due[tick] = []
            self._loop.call_at(tick * TICK, self._settle, tick)
        waiters.append(waiter)

    def _settle(self, tick: int) -> None:
        for waiter in self._due.pop(tick, ()):
            if not waiter.done():
                waiter.set_result(None)


_ticks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Ticks] = weakref.WeakKeyDictionary()


def _loop_ticks(loop: asyncio.AbstractEventLoop) -> _Ticks:
    ticks = _ticks.get(loop)
    if ticks is None:
        ticks = _ticks[loop] = _Ticks(loop)
    return ticks


class _Wakeup:
    """A flag the flusher sleeps on, up to a timeout. `asyncio.wait_for(event.wait(), t)`
    starts a task for every wait; the flusher waits once per frame of every stream, so this
    one parks on a bare future, and its timeout on the loop's ticks."""

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self, timeout: float | None = None) -> None:
        """Return once set, or after `timeout` seconds (None: once set)."""
        if self._set:
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        if timeout is not None:
            _loop_ticks(loop).settle_after(timeout, waiter)
        try:
            await waiter
        finally:
            self._waiter = None


class LiveTail:
    """A turn's chunks (sequence number, stored body) as this process broadcasts them, for a
    follower here: it gets them without waiting for the chunk log, which it reads only for
    the chunks broadcast before it joined."""

    def __init__(self) -> None:
        self._chunks: list[tuple[int, str]] = []
        self._wake = _Wakeup()

    def feed(self, sequenced: list[tuple[int, str]]) -> None:
        self._chunks.extend(sequenced)
        self._wake.set()

    def wake(self) -> None:
        """Something other than a chunk is worth a look now (the turn ended here)."""
        self._wake.set()

    def take_from(self, seq: int) -> list[tuple[int, str]]:
        """The unbroken run of chunks from `seq` on. Older ones are dropped; a run that starts
        later waits until the follower has read the chunks before it from the log."""
        pending = [chunk for chunk in self._chunks if chunk[0] >= seq]
        run = 0
        while run < len(pending) and pending[run][0] == seq + run:
            run += 1
        self._chunks = pending[run:]
        return pending[:run]

    async def wait(self, timeout: float) -> None:
        """Until more chunks came or `wake` was called, or `timeout` seconds."""
        await self._wake.wait(timeout)
        self._wake.clear()


class StreamPublisher:
    def __init__(self, session_id: int, turn_id: int, request_id: str, *, continuation: bool) -> None:
        self.session_id = session_id
        self.turn_id = turn_id
        self.request_id = request_id
        self.continuation = continuation
        self._next_seq = 0
        self._outbox: list[list[Any]] = []  # [seq, chunk] not yet broadcast
        self._store: list[str] = []
        self._store_first_seq = 0
        self._last_store = time.monotonic()
        self._wake = _Wakeup()
        self._closed = False
        self._closing = _Wakeup()  # cuts a coalescing wait short: the stream's end waits for nothing
        self._flusher: asyncio.Task[None] | None = None
        # The chunk-log write in progress. It runs beside the flusher: under load a write can
        # wait seconds for the database (every turn's writes queue on it), and frames must not.
        self._storing: asyncio.Task[None] | None = None
        # When what is broadcast and not yet stored is due in the chunk log: one timer per
        # store, not a timeout on every wait for the next chunk (a paced stream's flusher
        # waits twenty times a second, and each such timer was made, pushed on the event
        # loop's heap and cancelled again: thousands a second with hundreds of streams).
        self._store_due: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the one the stream runs in, from `begin`
        self._starting: asyncio.Future[None] | None = None  # `start`, run by `begin`
        self.started = False
        self._model_output_seen = False
        # The first model output is published and the reader has not yet let it go out.
        self.first_output_pending = False
        self._sent = asyncio.Event()  # set whenever the flusher has broadcast all it was given
        self._coalescing = False  # the flusher waits on purpose for more deltas
        self._output_sent = False  # the first model output has been broadcast

    async def _record_start(self, message_uid: str) -> None:
        """Mark the turn as streaming, then tell parked connections to resume onto it. The
        message id is recorded so that an orphaned stream can be rebuilt under it."""
        faults.point("stream_start")
        await db_async(row_writes.update)(
            Turn, {"pk": self.turn_id}, status=Turn.Status.STREAMING, heartbeat_at=timezone.now(), message_uid=message_uid
        )
        await broadcast.stream_started(self.session_id, self.request_id)
        self.started = True

    def begin(self, message_uid: str) -> None:
        """Start the stream. Its frames go out as the model produces them, while the turn is
        marked as streaming beside them (and beside the model call): under load that write
        waits its turn for the database, and a first frame held back for it came tens of
        milliseconds after the model's first words. A connection parked for the turn holds
        the frames it gets before it hears of the stream (turns/resume.py), and the stream's
        end waits for that announcement. A failed start fails the next `publish` and `flush`."""
        self._loop = asyncio.get_running_loop()
        self._starting = asyncio.ensure_future(self._record_start(message_uid))
        _streaming[self.turn_id] = self
        self._flusher = asyncio.create_task(self._flush_loop())

    def publish(self, chunk: dict[str, Any]) -> None:
        for task in (self._starting, self._flusher, self._storing):
            if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
                # Broadcasting or storing failed: stop the stream now, not when the model is done.
                raise task.exception()  # type: ignore[misc]
        if not self._model_output_seen and chunk.get("type") in _MODEL_OUTPUT:
            self._model_output_seen = self.first_output_pending = True
            query_count.first_token()
        last = self._outbox[-1][1] if self._outbox else None
        if (
            last is not None
            and chunk.get("type") in _MERGEABLE
            and last.get("type") == chunk.get("type")
            and last.get("id") == chunk.get("id")
            and set(chunk) == {"type", "id", "delta"}
            and set(last) == {"type", "id", "delta"}
        ):
            last["delta"] += chunk.get("delta", "")
            return
        self._outbox.append([self._next_seq, dict(chunk)])
        self._next_seq += 1
        self._sent.clear()
        self._wake.set()

    async def wait_sent(self) -> None:
        """Yield to the event loop until everything published so far is broadcast. The reader
        of a fast upstream finds many chunks already buffered and never suspends by itself:
        it calls this for the first model output and then every few milliseconds, so frames
        leave as they are produced rather than when the upstream's buffer runs dry."""
        self.first_output_pending = False
        flusher = self._flusher
        if flusher is None or flusher.done() or self._sent.is_set() or self._coalescing:
            await asyncio.sleep(0)
            return
        sent = asyncio.ensure_future(self._sent.wait())
        try:
            await asyncio.wait({sent, flusher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sent.cancel()

    def unstored(self) -> list[tuple[int, str]]:
        """The chunks broadcast and not yet handed to a chunk-log write."""
        return list(enumerate(self._store, self._store_first_seq))

    def _frame(self, body: str, *, done: bool, seq: int) -> frames.Frame:
        return frames.chat_response(self.request_id, body, done=done, continuation=self.continuation, seq=seq)

    async def _send_outbox(self) -> None:
        batch, self._outbox = self._outbox, []
        if not batch:
            return
        carries_output = self._model_output_seen  # published before this batch was taken
        sequenced: list[tuple[int, frames.Frame]] = []
        for seq, chunk in batch:
            body = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
            if not self._store:
                self._store_first_seq = seq
            self._store.append(body)
            sequenced.append((seq, self._frame(body, done=False, seq=seq)))
        for tail in _followers.get(self.turn_id, ()):
            tail.feed([(seq, frame["body"]) for seq, frame in sequenced])
        faults.point("broadcast")
        await broadcast.publish_stream(self.session_id, self.request_id, sequenced)
        if carries_output and not self._output_sent:
            timeline.mark(self.request_id, "first_frame")
        self._output_sent = self._output_sent or carries_output

    async def _write_store(self) -> None:
        if not self._store:
            return
        bodies, self._store = self._store, []
        await db_async(chunk_log.write_batch)(self.turn_id, self._store_first_seq, bodies)
        self._last_store = time.monotonic()
        if self._store and not self._closed:  # published while this write ran
            self._store_due_in(self._store_interval())

    def _store_interval(self) -> float:
        return FOLLOWED_STORE_INTERVAL if self.turn_id in _followers else STORE_INTERVAL

    def store_sooner(self) -> None:
        """A follower joined: what is not stored yet is due at a follower's pace."""
        if self._store:
            self._store_due_in(self._store_interval() - (time.monotonic() - self._last_store))

    def _store_due_in(self, delay: float) -> None:
        """Wake the flusher to store in `delay` seconds, unless it is to be woken sooner."""
        loop = self._loop
        assert loop is not None, "the stream has not begun"
        due = self._store_due
        if due is not None:
            if due.when() <= loop.time() + delay:
                return
            due.cancel()
        self._store_due = loop.call_later(max(0.0, delay), self._store_is_due)

    def _store_is_due(self) -> None:
        self._store_due = None
        self._wake.set()

    async def _flush_loop(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            window = coalescing_window()
            if window and self._output_sent and not self._closed:
                self._coalescing = True
                try:
                    await self._closing.wait(window)
                finally:
                    self._coalescing = False
            await self._send_outbox()
            if not self._outbox:
                self._sent.set()
            interval = self._store_interval()
            since_store = time.monotonic() - self._last_store
            if len(self._store) >= STORE_BATCH or (self._store and since_store >= interval):
                self._store_beside()
            elif self._store:
                self._store_due_in(interval - since_store)

    def _store_beside(self) -> None:
        """Start writing what accumulated, unless a write is still running (the next one
        takes everything published meanwhile; writes stay in sequence order)."""
        storing = self._storing
        if storing is not None:
            if not storing.done():
                return
            storing.result()  # a failed write fails the flusher, and so the stream
        self._storing = asyncio.create_task(self._write_store())

    async def flush(self) -> None:
        """Everything published so far is broadcast and stored when this returns. A chunk
        published after it goes out with the next `flush`."""
        await self.broadcast_all()
        await self._write_store()

    async def broadcast_all(self) -> None:
        """Everything published so far is broadcast, and every chunk-log write begun has
        ended; what no write took yet stays `pending_store()` until `flush` or the caller's
        own write (then `mark_stored`)."""
        if self._starting is not None:
            await self._starting
        self._closed = True
        self._wake.set()
        self._closing.set()
        if self._store_due is not None:
            self._store_due.cancel()
            self._store_due = None
        _streaming.pop(self.turn_id, None)
        if self._flusher is not None:
            flusher, self._flusher = self._flusher, None
            await flusher
        await self._send_outbox()
        if self._storing is not None:
            storing, self._storing = self._storing, None
            await storing

    def pending_store(self) -> chunk_log.Batch | None:
        """What is broadcast and not yet stored, as one chunk-log batch (None: nothing)."""
        return chunk_log.Batch(self.turn_id, self._store_first_seq, list(self._store)) if self._store else None

    def mark_stored(self, batch: chunk_log.Batch) -> None:
        """`batch`, taken from `pending_store`, was written by the caller."""
        del self._store[: len(batch.bodies)]
        self._store_first_seq += len(batch.bodies)

    async def send_final(self, final_frames: list[frames.Frame]) -> None:
        """Terminal frames (error, done) after the stored chunks; not part of the chunk log.
        Call it after `flush()` and after the turn's final status is stored (see `end_stream`)."""
        await broadcast.end_stream(self.session_id, self.request_id, final_frames, chunk_total=self._next_seq)
