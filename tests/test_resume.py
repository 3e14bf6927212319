"""Resumable streams and the resume handshake (protocol §5.7, §5.8, §9.10)."""
from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.utils import timezone

from agents_app.turns.instances import resolve_session
from agents_app.storage import client_messages, transcript
from agents_app.storage.models import Turn, TurnChunk
from agents_app.testing.fake_openai import Reply
from tests.conftest import is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
PATH = "/agents/scripted-agent/resume"
EXPECTED_TEXT = "".join(f"w{i} " for i in range(30))


def text_from(frames, request_id):
    deltas = []
    for frame in frames:
        if frame.get("type") == "cf_agent_use_chat_response" and frame.get("id") == request_id and frame.get("body") and not frame.get("error"):
            chunk = json.loads(frame["body"])
            if chunk["type"] == "text-delta":
                deltas.append(chunk["delta"])
    return "".join(deltas)


async def ready(open_socket, token, **kwargs):
    socket = await open_socket(PATH, token=token, **kwargs)
    await socket.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    return socket


async def turn_status(user, request_id):
    session = await sync_to_async(resolve_session)("scripted-agent", "resume", user)
    return await sync_to_async(
        lambda: Turn.objects.filter(session=session, request_id=request_id).values_list("status", flat=True).first()
    )()


async def wait_for_status(user, request_id, statuses, timeout=10):
    for _ in range(int(timeout / 0.05)):
        if await turn_status(user, request_id) in statuses:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"turn {request_id} never reached {statuses}")


async def test_a_reconnecting_client_gets_the_replay_then_the_live_tail_with_nothing_lost_or_repeated(open_socket, token):
    first = await ready(open_socket, token)
    await first.chat("resume01", [user_message("go", "u1")], words=30, delay=0.03)
    await first.until(lambda f: '"w3 "' in f.get("body", ""))
    await first.close()
    second = await open_socket(PATH, token=token, connection_id=first.connection_id)
    assert await second.next() == {"type": "cf_agent_stream_resuming", "id": "resume01"}
    await second.send({"type": "cf_agent_stream_resume_request", "probeId": "probe123"})
    frames = await second.until(lambda f: f.get("type") == "cf_agent_stream_resuming" and f.get("probeId"))
    assert frames[-1] == {"type": "cf_agent_stream_resuming", "id": "resume01", "probeId": "probe123"}
    await second.send({"type": "cf_agent_stream_resume_ack", "id": "resume01"})
    frames = await second.until(is_done("resume01"))
    replayed = [f for f in frames if f.get("replay")]
    assert replayed and all(f["replay"] is True for f in replayed)
    assert any(f.get("replayComplete") for f in frames)
    assert text_from(frames, "resume01") == EXPECTED_TEXT


async def test_connections_offered_a_resume_get_no_live_chunks_until_they_ack(open_socket, token):
    first = await ready(open_socket, token)
    await first.chat("resume02", [user_message("go", "u1")], words=20, delay=0.03)
    await first.until(lambda f: '"w1 "' in f.get("body", ""))
    late = await open_socket(PATH, token=token)
    frames = await late.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    assert {"type": "cf_agent_stream_resuming", "id": "resume02"} in frames
    assert not any(f.get("type") == "cf_agent_use_chat_response" for f in frames)
    assert await late.no_frame(0.2)


async def test_chunks_streamed_between_the_offer_and_the_ack_are_part_of_the_replay(open_socket, token):
    """A client that resumes a stream rebuilds its message from the replay: the chunks that
    went out while it was deciding to acknowledge, the stream's `start` among them, are replayed
    (not delivered live after `replayComplete`), however little the chunk log holds yet."""
    first = await ready(open_socket, token)
    await first.chat("resume07", [user_message("go", "u1")], words=30, delay=0.03)
    await first.until(lambda f: '"w1 "' in f.get("body", ""))
    late = await open_socket(PATH, token=token)
    await late.until(lambda f: f.get("type") == "cf_agent_stream_resuming")
    await asyncio.sleep(0.2)  # more chunks stream meanwhile, before the chunk log's next write
    await late.send({"type": "cf_agent_stream_resume_ack", "id": "resume07"})
    frames = [f for f in await late.until(is_done("resume07")) if f.get("type") == "cf_agent_use_chat_response"]
    complete_at = next(index for index, frame in enumerate(frames) if frame.get("replayComplete"))
    replay, live = frames[:complete_at], frames[complete_at + 1 :]
    assert json.loads(replay[0]["body"])["type"] == "start"
    assert all(frame.get("replay") is True for frame in replay)
    assert text_from(replay, "resume07").startswith("w0 w1 w2 ")
    assert not any(frame.get("replay") for frame in live if frame.get("body"))
    sequence = [frame["seq"] for frame in frames if "seq" in frame]
    assert sequence == list(range(len(sequence)))  # every chunk once, in order
    assert text_from(frames, "resume07") == EXPECTED_TEXT


async def test_a_stream_that_completed_before_the_ack_is_replayed_then_done(open_socket, token, user):
    first = await ready(open_socket, token)
    await first.chat("resume03", [user_message("go", "u1")], words=10, delay=0.05)
    await first.until(lambda f: '"w1 "' in f.get("body", ""))
    late = await open_socket(PATH, token=token)
    await late.until(lambda f: f.get("type") == "cf_agent_stream_resuming")
    await wait_for_status(user, "resume03", {"completed"})
    await late.send({"type": "cf_agent_stream_resume_ack", "id": "resume03"})
    frames = await late.until(is_done("resume03"))
    assert frames[-1] == {"type": "cf_agent_use_chat_response", "id": "resume03", "body": "", "done": True, "replay": True}
    assert text_from(frames, "resume03") == "".join(f"w{i} " for i in range(10))


async def test_an_ai_chat_tab_waiting_to_resume_gets_no_transcript_before_its_ack(open_socket, token, user):
    first = await ready(open_socket, token)
    await first.chat("resume08", [user_message("go", "u1")], words=10, delay=0.05)
    await first.until(lambda f: '"w1 "' in f.get("body", ""))
    late = await ready(open_socket, token)  # offered the stream, then the connect frames
    await wait_for_status(user, "resume08", {"completed"})
    received = []
    while not await late.no_frame(0.3):
        received.append(await late.next())
    assert received == []


THINK_ANSWER = "one two three four five six"


async def think_tab_offered_a_stream(open_socket, token, model, room, request_id):
    """A second tab of a Think chat, opened while the first tab's turn streams: it has been
    offered the stream (cf_agent_stream_resuming) and has not acknowledged it."""
    model.script(Reply.text(THINK_ANSWER, chunk_size=4, delay=0.05))
    path = f"/agents/chat-agent/{room}"
    first = await open_socket(path, token=token, wait_ready=True)
    await first.chat(request_id, [user_message("go", "u1")])
    await first.until(lambda f: "text-delta" in f.get("body", ""))
    late = await open_socket(path, token=token)
    await late.until(lambda f: f.get("type") == "cf_agent_stream_resuming")
    return late


async def test_a_think_tab_waiting_to_resume_still_gets_the_final_transcript(open_socket, token, model):
    late = await think_tab_offered_a_stream(open_socket, token, model, "resume-think", "think01")
    frames = await late.until(lambda f: f.get("type") == "cf_agent_chat_messages")  # never acknowledged
    assert frames[-1]["messages"][-1]["parts"][-1]["text"] == THINK_ANSWER
    assert not any(f.get("type") == "cf_agent_use_chat_response" for f in frames)


async def test_an_ack_after_the_stream_ended_is_answered_by_the_replay_then_the_stored_transcript(open_socket, token, model):
    """The transcript of the turn's end reached this tab before its ACK; the replay that
    follows makes the client rebuild the message (a continuation's under an id of its own),
    so the stored transcript comes again after the done frame and the tab ends as stored."""
    late = await think_tab_offered_a_stream(open_socket, token, model, "resume-late-ack", "late01")
    await late.until(lambda f: f.get("type") == "cf_agent_chat_messages")  # the turn's end
    await late.send({"type": "cf_agent_stream_resume_ack", "id": "late01"})
    frames = await late.until(lambda f: f.get("type") == "cf_agent_chat_messages")
    assert [f.get("done") for f in frames if f.get("type") == "cf_agent_use_chat_response"][-1] is True
    assert text_from(frames, "late01") == THINK_ANSWER
    assert frames[-1]["messages"][-1]["parts"][-1]["text"] == THINK_ANSWER


async def test_an_ack_for_another_request_id_produces_nothing(open_socket, token):
    first = await ready(open_socket, token)
    await first.chat("resume04", [user_message("go", "u1")], words=20, delay=0.05)
    await first.until(lambda f: '"w1 "' in f.get("body", ""))
    late = await open_socket(PATH, token=token)
    await late.until(lambda f: f.get("type") == "cf_agent_stream_resuming")
    await late.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    await late.send({"type": "cf_agent_stream_resume_ack", "id": "someother"})
    assert await late.no_frame(0.3)


async def test_a_connection_arriving_after_the_stream_completed_is_not_offered_a_resume(open_socket, token):
    first = await ready(open_socket, token)
    await first.chat("resume05", [user_message("go", "u1")], words=3)
    await first.until(is_done("resume05"))
    late = await open_socket(PATH, token=token)
    frames = await late.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    assert not any(f["type"] == "cf_agent_stream_resuming" for f in frames)


async def test_acknowledging_an_orphaned_stream_persists_its_partial_and_the_agent_continues_it(open_socket, token, user):
    session = await sync_to_async(resolve_session)("scripted-agent", "resume", user)

    def orphan() -> None:
        client_messages.upsert(session, [user_message("before the crash", "u9")], move_leaf=True)
        turn = Turn.objects.create(
            session=session, request_id="orphan01", status=Turn.Status.STREAMING, message_uid="assistant_orphan",
            heartbeat_at=timezone.now() - timedelta(minutes=5),
        )
        bodies = [json.dumps(c) for c in ({"type": "start", "messageId": "assistant_orphan"}, {"type": "text-start", "id": "t"}, {"type": "text-delta", "id": "t", "delta": "half an ans"})]
        TurnChunk.objects.create(turn=turn, seq=0, bodies=bodies)

    await sync_to_async(orphan)()
    socket = await open_socket(PATH, token=token)
    assert await socket.next() == {"type": "cf_agent_stream_resuming", "id": "orphan01"}
    await socket.send({"type": "cf_agent_stream_resume_ack", "id": "orphan01"})
    frames = await socket.until(is_done("orphan01"))
    assert frames[-1] == {"type": "cf_agent_use_chat_response", "id": "orphan01", "body": "", "done": True, "replay": True}
    assert not any(f.get("replayComplete") for f in frames)
    frames = await socket.until(lambda f: f == {"type": "cf_agent_chat_recovering", "recovering": False, "id": "orphan01"})
    assert {"type": "cf_agent_chat_recovering", "recovering": True, "id": "orphan01"} in frames
    continued = [f for f in frames if f["type"] == "cf_agent_use_chat_response"]
    assert continued[-1]["done"] and all(f["continuation"] for f in continued)
    assert not any(f.get("id") == "orphan01" for f in frames if f["type"] == "cf_agent_use_chat_response")
    assert await turn_status(user, "orphan01") == "interrupted"
    stored = await sync_to_async(transcript.transcript)(session)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[-1]["id"] == "assistant_orphan"
    assert [p["text"] for p in stored[-1]["parts"] if p["type"] == "text"] == ["half an ans", "w0 w1 w2 w3 w4 "]


async def test_a_turn_accepted_but_not_streaming_parks_new_connections_until_it_streams(open_socket, token, user):
    first = await ready(open_socket, token)
    await first.chat("pending1", [user_message("go", "u1")], pre_delay=0.6, words=2)
    await wait_for_status(user, "pending1", Turn.PRE_STREAM)
    parked = await open_socket(PATH, token=token)
    assert await parked.next() == {"type": "cf_agent_stream_pending", "id": "pending1"}
    await parked.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    assert (await parked.next(timeout=5)) == {"type": "cf_agent_stream_resuming", "id": "pending1"}


async def test_parked_connections_are_released_when_the_turn_ends_without_streaming(open_socket, token, user):
    first = await ready(open_socket, token)
    await first.chat("pending2", [user_message("go", "u1")], pre_delay=0.5, none=True)
    await wait_for_status(user, "pending2", Turn.PRE_STREAM)
    parked = await open_socket(PATH, token=token)
    assert await parked.next() == {"type": "cf_agent_stream_pending", "id": "pending2"}
    frames = await parked.until(lambda f: f["type"] == "cf_agent_stream_resume_none")
    assert frames[-1] == {"type": "cf_agent_stream_resume_none"}


async def test_a_turn_that_failed_while_nobody_listened_is_delivered_through_the_handshake(open_socket, token, user):
    first = await ready(open_socket, token)
    await first.chat("failed01", [user_message("go", "u1")], words=5, fail_after=2)
    await first.close()
    await wait_for_status(user, "failed01", {"error"})
    again = await ready(open_socket, token)
    await again.send({"type": "cf_agent_stream_resume_request", "probeId": "p0000001"})
    assert await again.next() == {"type": "cf_agent_stream_resuming", "id": "failed01", "probeId": "p0000001"}
    await again.send({"type": "cf_agent_stream_resume_ack", "id": "failed01"})
    frames = await again.until(is_done("failed01"))
    assert frames[-1] == {"type": "cf_agent_use_chat_response", "id": "failed01", "body": "the stream broke", "done": True, "error": True}
    assert text_from(frames, "failed01") == "w0 w1 "


class _StartHeldBack:
    """Holds the turn's row locked (on SQLite: the database's write lock) from another
    connection, so that recording the stream's start waits until `release`."""

    def __init__(self, user, request_id):
        self._locked, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold, args=(user, request_id))

    def _hold(self, user, request_id):
        try:
            with transaction.atomic():
                Turn.objects.filter(session__owner=user, request_id=request_id).update(heartbeat_at=timezone.now())
                self._locked.set()
                self._release.wait(20)
        finally:
            connection.close()

    async def __aenter__(self):
        self._thread.start()
        assert await sync_to_async(self._locked.wait)(10)
        return self

    async def __aexit__(self, *exc_info):
        self._release.set()
        await sync_to_async(self._thread.join)(10)


async def test_a_streams_first_frames_do_not_wait_for_its_start_to_be_recorded(open_socket, token, user):
    first = await ready(open_socket, token)
    await first.chat("unheld01", [user_message("go", "u1")], pre_delay=0.5, words=10, delay=0.02)
    await wait_for_status(user, "unheld01", Turn.PRE_STREAM)
    async with _StartHeldBack(user, "unheld01"):
        await first.until(lambda f: '"w2 "' in f.get("body", ""), timeout=5)
        assert await turn_status(user, "unheld01") in Turn.PRE_STREAM
    frames = await first.until(is_done("unheld01"))
    assert text_from(first.received, "unheld01") == "".join(f"w{i} " for i in range(10))
    assert frames[-1]["done"] is True and not frames[-1].get("error")


async def test_a_connection_parked_for_a_turn_gets_the_frames_sent_before_it_heard_of_the_stream_in_its_replay(open_socket, token, user):
    first = await ready(open_socket, token)
    await first.chat("unheld02", [user_message("go", "u1")], pre_delay=0.5, words=40, delay=0.03)
    await wait_for_status(user, "unheld02", Turn.PRE_STREAM)
    parked = await open_socket(PATH, token=token)
    assert await parked.next() == {"type": "cf_agent_stream_pending", "id": "unheld02"}
    await parked.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    async with _StartHeldBack(user, "unheld02"):
        await first.until(lambda f: '"w2 "' in f.get("body", ""), timeout=5)
        assert await parked.no_frame(0.2)
    assert await parked.next(timeout=5) == {"type": "cf_agent_stream_resuming", "id": "unheld02"}
    await parked.send({"type": "cf_agent_stream_resume_ack", "id": "unheld02"})
    frames = [f for f in await parked.until(is_done("unheld02")) if f.get("type") == "cf_agent_use_chat_response"]
    complete_at = next(index for index, frame in enumerate(frames) if frame.get("replayComplete"))
    assert json.loads(frames[0]["body"])["type"] == "start"
    assert all(frame.get("replay") is True for frame in frames[:complete_at])
    sequence = [frame["seq"] for frame in frames if "seq" in frame]
    assert sequence == list(range(len(sequence)))  # every chunk once, in order
    assert text_from(frames, "unheld02") == "".join(f"w{i} " for i in range(40))
