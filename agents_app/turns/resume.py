"""The resume handshake and live-stream delivery for one connection (protocol §4, §5.7, §5.8, §9.10).

Each connection keeps its own view of the shared truth in the database:
* attached to a stream (it sent the request, was in the session group when the stream
  started, or acknowledged its replay) → it gets every frame of it live, whatever else it is
  offered meanwhile: the official transport never acknowledges an offer of a request it sent
  itself, so holding that stream back would strand it without its done frame;
* offered a resume and not yet acknowledged → live frames of other streams are held back;
* parked (a turn is accepted but not streaming) → waits for stream-start or release, holding
  the frames of a stream it has not heard of yet (they may come first: the producer does
  not hold its frames back until the stream's start is recorded and announced);
* every live chunk carries a sequence number, so after a replay from the chunk log the
  live tail continues exactly after the last replayed chunk: nothing lost, nothing twice,
  whichever process produced the stream;
* a stream's terminal frames say how many chunks came before them: a connection that missed
  the last ones reads them from the chunk log first, and each connection gets them once.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from channels.consumer import get_handler_name
from django.utils import timezone

from agents_app.protocol import frames
from agents_app.turns import process_liveness, recovery, runner, turn_lock
from agents_app.turns.event_loop_dispatch import LeanDispatchMixin
from agents_app.storage import chunk_log, transcript
from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session, Turn

logger = logging.getLogger(__name__)

GAP_WAIT_SECONDS = 5.0
# How long the end of a stream may wait for its missing chunks: past it (a database that is
# restarting), the terminal frames go out without them, so the client is never left waiting.
END_GAP_SECONDS = GAP_WAIT_SECONDS + 5.0
PRODUCER_CHECK_SECONDS = process_liveness.ANNOUNCE_INTERVAL_SECONDS
Send = Callable[[list[frames.Frame]], Awaitable[None]]


@dataclass(frozen=True)
class StreamEnd:
    """A stream's terminal frames and the number of chunks that precede them."""

    frames: list[frames.Frame]
    chunk_total: int


Held = tuple[int, frames.Frame] | StreamEnd


# Asked by every connection as it opens, and at every probe and acknowledgement.
_ACTIVE_STREAM = CompiledQuery(lambda pk: Turn.objects.filter(session_id=pk, status=Turn.Status.STREAMING).order_by("-id")[:1])
_LATEST_PRE_STREAM = CompiledQuery(lambda pk: Turn.objects.filter(session_id=pk, status__in=Turn.PRE_STREAM).order_by("-id")[:1])


def _active_stream(session_id: int) -> Turn | None:
    return _ACTIVE_STREAM.instance(session_id)


def _latest_pre_stream(session_id: int) -> Turn | None:
    return _LATEST_PRE_STREAM.instance(session_id)


def _stream_on_connect(session_id: int) -> tuple[Turn | None, Turn | None]:
    """(the streaming turn, else the latest turn not yet streaming): what a new connection is told."""
    active = _active_stream(session_id)
    return active, None if active is not None else _latest_pre_stream(session_id)


def _is_live(turn: Turn) -> bool:
    """A streaming turn lost its process when that process is gone or the turn stopped
    heart-beating (see recovery.py)."""
    beating = turn.heartbeat_at is not None and turn.heartbeat_at > timezone.now() - turn_lock.stale_after()
    return beating and process_liveness.is_alive(turn.owner or "")


def _stored_transcript(session_id: int) -> list[dict[str, Any]]:
    return transcript.transcript(Session.objects.get(pk=session_id))


def _orphaned(turn_id: int) -> bool | None:
    """Whether a turn's stream lost its producer; None once it no longer streams."""
    turn = Turn.objects.filter(pk=turn_id, status=Turn.Status.STREAMING).first()
    return None if turn is None else not _is_live(turn)


class ConnectionStreams:
    """Per-connection stream state; `send` writes frames to this connection's socket."""

    def __init__(self, session_id: int, send: Send) -> None:
        self.session_id = session_id
        self.send = send
        self.offered: str | None = None  # request id offered with cf_agent_stream_resuming
        self.parked = False
        self._held: list[Held] = []
        # While parked: the chunks of a stream not announced yet (request id, sequenced).
        self._unannounced: tuple[str, list[Held]] | None = None
        # Streams delivered live to this connection: request id → last chunk seq it got.
        self._attached: dict[str, int] = {}
        # Streams whose end this connection was given (live, or after a replay): a terminal
        # frame still on its way for them is not delivered twice.
        self._ended: set[str] = set()
        # Request ids this connection sent → the last chunk seq it had of them when their stream
        # ended here (-1 until then).
        self._own: dict[str, int] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    def own(self, request_id: str) -> None:
        """This connection sent the chat request: its transport reads the turn's frames as they
        come and ignores resume offers for it, so they are never held back from it."""
        if request_id not in self._ended:
            self._attached.setdefault(request_id, -1)
            self._own.setdefault(request_id, -1)

    # -- connect and probe ----------------------------------------------------------
    async def on_connect(self) -> None:
        active, pending = await db_async(_stream_on_connect)(self.session_id)
        if active is not None:
            await self._offer(active.request_id)
            return
        if pending is not None:
            self.parked = True
            await self.send([frames.stream_pending(pending.request_id)])

    async def on_probe(self, probe_id: str | None) -> None:
        active = await db_async(_active_stream)(self.session_id)
        if active is not None:
            await self._offer(active.request_id, probe_id)
            return
        session_terminal = await db_async(
            lambda: Session.objects.filter(pk=self.session_id).values_list("terminal", flat=True).first()
        )()
        if session_terminal and session_terminal.get("requestId"):
            await self.send([frames.stream_resuming(session_terminal["requestId"], probe_id)])
            return
        pending = await db_async(_latest_pre_stream)(self.session_id)
        if pending is not None:
            self.parked = True
            await self.send([frames.stream_pending(pending.request_id, probe_id)])
            return
        await self.send([frames.stream_resume_none("idle", probe_id)])

    async def _offer(self, request_id: str, probe_id: str | None = None) -> None:
        if self.offered != request_id:
            self._held = []
        self.offered = request_id
        await self.send([frames.stream_resuming(request_id, probe_id)])

    # -- acknowledgement --------------------------------------------------------------
    async def on_ack(self, request_id: str) -> None:
        active = await db_async(_active_stream)(self.session_id)
        if active is not None and active.request_id != request_id and self.offered != request_id:
            return  # an ACK for a stream this connection was not offered: the offer still stands
        held = self._held if self.offered == request_id else []  # frames of the stream it acknowledges
        self._held = []
        self.offered = None
        if active is not None and active.request_id == request_id:
            await self._replay_active(active, held)
            return
        # The stream ended, before the ACK or while the next turn began to stream: its replay
        # and terminal frame, and the next stream reaches this connection live from then on.
        await self._replay_finished(request_id)

    async def _replay(self, turn: Turn, from_seq: int = 0) -> int:
        pairs = await db_async(chunk_log.read_bodies)(turn.pk, from_seq)
        replayed = [
            frames.chat_response(turn.request_id, body, done=False, replay=True, continuation=turn.is_continuation, seq=seq)
            for seq, body in pairs
            if body is not None
        ]
        if replayed:
            await self.send(replayed)
        return pairs[-1][0] if pairs else -1

    def _first_to_replay(self, request_id: str) -> int:
        """The sender's own client acknowledges its request only when it swapped its chat object
        meanwhile; it keeps the chunks it already got and adds replayed ones to the same
        message (a second `start-step` is a second step), so its replay starts after them.
        Any other connection rebuilds the message from the first chunk."""
        if request_id not in self._own:
            return 0
        return max(self._attached.get(request_id, -1), self._own[request_id]) + 1

    async def _replay_active(self, turn: Turn, held: list[Held]) -> None:
        received = self._attached.get(turn.request_id, -1)
        first = self._first_to_replay(turn.request_id)
        last = max(await self._replay(turn, first), first - 1)
        if await db_async(_is_live)(turn):
            # Chunks that went out before the ACK and that the chunk log does not hold yet are
            # part of the replay asked for: those a connection already receiving this stream got
            # live, and those broadcast while this one was offered it (held; the client rebuilds
            # the message from the replay, so the stream's `start` must be in it, not after).
            held_chunks = [item for item in held if not isinstance(item, StreamEnd) and item[0] > last]
            from_log_to = held_chunks[0][0] - 1 if held_chunks else received
            tail = await self._fill_gap(turn.request_id, last + 1, from_log_to, continuation=turn.is_continuation, replay=True)
            tail.extend(frames.replayed(frame) for _, frame in held_chunks)
            await self.send(
                [*tail, frames.chat_response(turn.request_id, done=False, replay=True, replay_complete=True, continuation=turn.is_continuation)]
            )
            self._attached[turn.request_id] = max(last, received, held_chunks[-1][0] if held_chunks else -1)
            watcher = asyncio.create_task(self._watch_producer(turn.pk, turn.request_id))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
            for item in held:
                if isinstance(item, StreamEnd):
                    await self._deliver_end(turn.request_id, item)
            return
        await self.send([frames.chat_response(turn.request_id, done=True, replay=True, continuation=turn.is_continuation)])
        self._end(turn.request_id)
        # Nobody produces this stream any more: persist what it had and carry the turn on here.
        runner.keep(asyncio.create_task(recovery.recover(turn.pk)))

    async def _watch_producer(self, turn_id: int, request_id: str) -> None:
        """A stream this connection resumed whose process dies later is recovered as soon as
        that is known, not only at the client's next probe."""
        while request_id in self._attached:
            await asyncio.sleep(PRODUCER_CHECK_SECONDS)
            orphaned = await db_async(_orphaned)(turn_id)
            if orphaned is None:
                return
            if orphaned:
                # Its end reaches this connection through the group; the recovery outlives it.
                runner.keep(asyncio.create_task(recovery.recover(turn_id)))
                return

    def close(self) -> None:
        """The connection closed: stop watching the streams it followed."""
        for watcher in self._watchers:
            watcher.cancel()

    async def _replay_finished(self, request_id: str) -> None:
        def lookup() -> tuple[Turn | None, dict[str, Any] | None]:
            turn = Turn.objects.filter(session_id=self.session_id, request_id=request_id).first()
            terminal = Session.objects.filter(pk=self.session_id).values_list("terminal", flat=True).first()
            return turn, terminal if terminal and terminal.get("requestId") == request_id else None

        turn, terminal = await db_async(lookup)()
        first = self._first_to_replay(request_id)
        self._end(request_id)
        replayed = -1
        if terminal is not None:
            if turn is not None:
                replayed = await self._replay(turn, first)
            await self.send([frames.chat_response(request_id, terminal.get("body", ""), done=True, error=True)])
        else:
            if turn is not None and turn.status in (Turn.Status.COMPLETED, Turn.Status.ABORTED):
                replayed = await self._replay(turn, first)
            continuation = bool(turn and turn.is_continuation)
            await self.send([frames.chat_response(request_id, done=True, replay=True, continuation=continuation)])
        if replayed >= 0 and first == 0:
            # The client rebuilt the message from the replay, a continuation's under an id of its
            # own (its `start` names none), and the transcript that shows the stored message may
            # have reached it before this ACK: the stored list comes last, as after a live stream.
            # (A sender's client that had the stream's first chunks only appends the rest.)
            await self.send([frames.chat_messages(await db_async(_stored_transcript)(self.session_id))])

    def _end(self, request_id: str) -> None:
        received = self._attached.pop(request_id, -1)
        if request_id in self._own:
            self._own[request_id] = max(self._own[request_id], received)
        self._ended.add(request_id)

    # -- live delivery ----------------------------------------------------------------
    def _withheld(self, request_id: str) -> bool:
        """A connection offered a resume waits for its ACK (it is in the pending-resume set),
        except for streams it is already receiving live."""
        return self.offered is not None and request_id not in self._attached

    async def on_stream_frames(self, request_id: str, sequenced: list[tuple[int, frames.Frame]]) -> None:
        if self.parked and request_id not in self._attached:
            # It is offered once its start is announced, and gets these with the stream then.
            if self._unannounced is None or self._unannounced[0] != request_id:
                self._unannounced = (request_id, [])
            self._unannounced[1].extend(sequenced)
            return
        if self._withheld(request_id):
            if self.offered == request_id:
                self._held.extend(sequenced)
            return
        await self._deliver(request_id, sequenced)

    async def on_stream_end(self, request_id: str, end: StreamEnd) -> None:
        if self._withheld(request_id):
            if self.offered == request_id:
                self._held.append(end)
            return
        await self._deliver_end(request_id, end)

    async def _deliver(self, request_id: str, sequenced: list[tuple[int, frames.Frame]]) -> None:
        """Chunks in order from where this connection is; a connection that was not attached
        joined mid-stream without an offer and gets the stream from its first chunk."""
        if request_id in self._ended:
            return
        last = self._attached.get(request_id, -1)
        outgoing: list[frames.Frame] = []
        for seq, frame in sequenced:
            if seq <= last:
                continue
            if seq > last + 1:
                outgoing.extend(await self._fill_gap(request_id, last + 1, seq - 1, continuation=bool(frame.get("continuation"))))
            outgoing.append(frame)
            last = seq
        self._attached[request_id] = last
        if outgoing:
            await self.send(outgoing)

    async def _deliver_end(self, request_id: str, end: StreamEnd) -> None:
        """The terminal frames, once, after every chunk: those broadcast before this connection
        listened come from the chunk log (complete by now: the end is sent after the flush)."""
        if request_id not in self._attached:
            return  # ended here already, or never shown to this connection
        first_missing = self._attached[request_id] + 1
        continuation = bool(end.frames[-1].get("continuation"))
        self._end(request_id)
        try:
            missing = await asyncio.wait_for(
                self._fill_gap(request_id, first_missing, end.chunk_total - 1, continuation=continuation), END_GAP_SECONDS
            )
        except Exception:  # the chunk log is unreachable: the outcome still reaches the client
            logger.warning("stream %s: missing chunks could not be read before its end", request_id, exc_info=True)
            missing = []
        if missing and request_id in self._own:
            self._own[request_id] = max(self._own[request_id], missing[-1]["seq"])
        if self.offered == request_id:
            # Offered while it was already receiving it: nothing is left to resume.
            self.offered = None
        await self.send(missing + end.frames)

    async def _fill_gap(
        self, request_id: str, first: int, last: int, *, continuation: bool, replay: bool = False
    ) -> list[frames.Frame]:
        """Chunks `first`..`last` this connection did not get live: read them from the chunk
        log, waiting briefly for the producer's next batch write."""
        if first > last:
            return []
        turn_id = await db_async(
            lambda: Turn.objects.filter(session_id=self.session_id, request_id=request_id).values_list("id", flat=True).first()
        )()
        deadline = asyncio.get_running_loop().time() + GAP_WAIT_SECONDS
        pairs: list[tuple[int, str | None]] = []
        while turn_id is not None:
            pairs = await db_async(chunk_log.read_bodies)(turn_id, first, last)
            if len(pairs) >= last - first + 1 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.03)
        return [
            frames.chat_response(request_id, body, done=False, seq=seq, continuation=continuation, replay=replay)
            for seq, body in pairs
            if body is not None
        ]

    def await_continuation(self, request_id: str | None) -> None:
        """The sender of a tool answer is offered the continuation it scheduled (§9.3 step 3)."""
        if request_id is not None:
            self.parked = True

    # -- turn lifecycle notifications ----------------------------------------------------
    async def on_stream_started(self, request_id: str) -> None:
        unannounced, self._unannounced = self._unannounced, None
        if self.parked:
            self.parked = False
            await self._offer(request_id)
            if unannounced is not None and unannounced[0] == request_id:
                self._held.extend(unannounced[1])
        elif self.offered is None:
            self._attached.setdefault(request_id, -1)  # it gets this stream from its first frame

    async def on_turn_settled(self, *, streamed: bool, pre_stream_remaining: bool) -> None:
        if self.parked and not streamed and not pre_stream_remaining:
            self.parked = False
            self._unannounced = None
            await self.send([frames.stream_resume_none()])

    async def on_release(self) -> None:
        self.offered = None
        self._held = []
        self._unannounced = None
        if self.parked:
            self.parked = False
            await self.send([frames.stream_resume_none()])


class StreamEventsMixin(LeanDispatchMixin):
    """Channel-layer handlers shared by every consumer that joins a session group; the
    consumer provides `streams` (its ConnectionStreams). Messages are received through
    `LeanDispatchMixin` (turns/event_loop_dispatch.py)."""

    streams: ConnectionStreams

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels runs `close_old_connections` before every handler: a hop to asgiref's one
        shared thread, which also gives that thread's connection back (CONN_MAX_AGE is 0), so
        its next query takes one again. A session's channel-layer events, many per second per
        socket while a turn streams, are no request boundary, and neither is a client's frame:
        the consumers query through the database threads, which check their own connections
        (storage/db_threads.py), and a burst of chat requests waited in line for that one
        thread, each behind the others. Agent code that a frame runs (RPC methods,
        `on_message`) gets its request boundary from `database_sync_to_async`, as Channels
        advises; a connection that broke is dropped at its failing query anyway
        (storage/connections.py). Connect and disconnect still get it."""
        kind = message["type"]
        if kind == "websocket.receive":
            await self.websocket_receive(message)  # type: ignore[attr-defined]
            return
        if kind.startswith("agent."):
            handler = getattr(self, get_handler_name(message), None)
            if handler is not None:
                await handler(message)
                return
        await super().dispatch(message)  # type: ignore[misc]

    async def agent_stream(self, message: dict[str, Any]) -> None:
        await self.streams.on_stream_frames(message["request_id"], [(seq, frame) for seq, frame in message["frames"]])

    async def agent_stream_end(self, message: dict[str, Any]) -> None:
        await self.streams.on_stream_end(message["request_id"], StreamEnd(message["frames"], message["chunk_total"]))

    async def agent_stream_started(self, message: dict[str, Any]) -> None:
        await self.streams.on_stream_started(message["request_id"])

    async def agent_turn_settled(self, message: dict[str, Any]) -> None:
        await self.streams.on_turn_settled(streamed=message["streamed"], pre_stream_remaining=message["pre_stream_remaining"])

    async def agent_release_parked(self, message: dict[str, Any]) -> None:
        await self.streams.on_release()

    async def agent_session_changed(self, message: dict[str, Any]) -> None:
        """The session's own record changed (a title, the chat page's queue): nothing the
        protocol carries; the chat page's socket overrides this to redraw what it shows."""
