"""Every connection shown a turn's stream gets that turn's terminal frame exactly once, after
all its chunks (issue #20), whatever resume handshake it went through meanwhile."""
from __future__ import annotations

import json

import pytest

from asgiref.sync import sync_to_async

from agents_app.turns.instances import resolve_session
from agents_app.turns.resume import ConnectionStreams, StreamEnd
from tests.conftest import is_done, user_message
from tests.test_resume import PATH, ready

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


def stream_of(frames, request_id):
    return [f for f in frames if f.get("type") == "cf_agent_use_chat_response" and f.get("id") == request_id]


def text_of(stream):
    return "".join(json.loads(f["body"]).get("delta", "") for f in stream if f["body"] and json.loads(f["body"])["type"] == "text-delta")


def assert_one_pass_then_done(stream, words):
    """Each chunk once, in seq order, every word of the answer, then one done frame last."""
    chunks = [f for f in stream if f["body"]]
    assert [f["seq"] for f in chunks] == list(range(len(chunks)))
    assert text_of(chunks) == "".join(f"w{i} " for i in range(words))
    assert [f for f in stream if f["done"]] == [stream[-1]]


async def test_a_sender_that_probes_before_its_turn_streams_still_receives_the_whole_turn_live(open_socket, token):
    # The official client's request can overtake its mount-time probe. The probe then finds
    # the sender's own turn accepted but not streaming (PENDING), and the stream start offers
    # it (RESUMING), which its transport never acknowledges because it owns the request.
    sender = await ready(open_socket, token)
    await sender.chat("ownpre01", [user_message("go", "u1")], pre_delay=0.4, words=6)
    await sender.send({"type": "cf_agent_stream_resume_request", "probeId": "probe001"})
    frames = await sender.until(is_done("ownpre01"))
    assert {"type": "cf_agent_stream_pending", "id": "ownpre01", "probeId": "probe001"} in frames
    assert {"type": "cf_agent_stream_resuming", "id": "ownpre01"} in frames
    assert_one_pass_then_done(stream_of(frames, "ownpre01"), 6)
    assert await sender.no_frame(0.5)  # no second done (the requester gets no transcript)


async def test_a_sender_that_probes_mid_stream_and_does_not_ack_keeps_receiving_it_to_the_done_frame(open_socket, token):
    sender = await ready(open_socket, token)
    await sender.chat("ownmid01", [user_message("go", "u1")], words=15, delay=0.03)
    await sender.until(lambda f: '"w2 "' in f.get("body", ""))
    await sender.send({"type": "cf_agent_stream_resume_request", "probeId": "probe002"})
    await sender.until(is_done("ownmid01"))
    assert {"type": "cf_agent_stream_resuming", "id": "ownmid01", "probeId": "probe002"} in sender.received
    assert_one_pass_then_done(stream_of(sender.received, "ownmid01"), 15)
    assert await sender.no_frame(0.5)


async def test_a_sender_that_acks_its_own_stream_gets_each_chunk_once_then_one_done(open_socket, token):
    # The official client acknowledges its own request after it swapped its chat object; it
    # keeps the chunks it got live and would add replayed copies to the same message.
    sender = await ready(open_socket, token)
    await sender.chat("ownack01", [user_message("go", "u1")], words=15, delay=0.03)
    await sender.until(lambda f: '"w3 "' in f.get("body", ""))
    await sender.send({"type": "cf_agent_stream_resume_request", "probeId": "probe004"})
    await sender.until(lambda f: f.get("probeId") == "probe004")
    await sender.send({"type": "cf_agent_stream_resume_ack", "id": "ownack01"})
    await sender.until(is_done("ownack01"))
    stream = [f for f in stream_of(sender.received, "ownack01") if not f.get("replayComplete")]
    assert_one_pass_then_done(stream, 15)


async def finished_turn_and_its_senders_view(open_socket, token, user, request_id, words):
    """A turn streamed to its end, and a second view of its sender's connection (our own
    ConnectionStreams, recording what it sends) that has been told it sent that request:
    the view's frames can then arrive late, as they do under load."""
    sender = await ready(open_socket, token)
    await sender.chat(request_id, [user_message("go", "u1")], words=words, delay=0.01)
    await sender.until(is_done(request_id))
    session = await sync_to_async(resolve_session)("scripted-agent", "resume", user)
    sent: list[dict] = []

    async def record(outgoing):
        sent.extend(outgoing)

    view = ConnectionStreams(session.pk, record)
    view.own(request_id)
    return stream_of(sender.received, request_id), view, sent


async def test_a_sender_whose_ack_arrives_after_its_stream_finished_gets_only_the_chunks_it_lacks_then_done(open_socket, token, user):
    # Under load a sender's live frames can lag behind the database: its ACK then finds the
    # turn already finished. What it got live stays; the replay adds only the rest.
    stream, lagging, sent = await finished_turn_and_its_senders_view(open_socket, token, user, "ownlate1", 8)
    got_live = [f for f in stream if f["body"]][:5]
    await lagging.on_stream_frames("ownlate1", [(f["seq"], f) for f in got_live])
    assert sent == got_live
    await lagging.on_ack("ownlate1")
    assert_one_pass_then_done(sent, 8)


async def test_a_sender_that_acks_after_it_received_its_whole_stream_gets_only_the_done_frame_again(open_socket, token, user):
    stream, finished, sent = await finished_turn_and_its_senders_view(open_socket, token, user, "ownall01", 6)
    chunks = [f for f in stream if f["body"]]
    await finished.on_stream_frames("ownall01", [(f["seq"], f) for f in chunks])
    await finished.on_stream_end("ownall01", StreamEnd([stream[-1]], len(chunks)))
    await finished.on_ack("ownall01")
    assert sent[: len(chunks) + 1] == [*chunks, stream[-1]]
    assert sent[len(chunks) + 1 :] == [{"type": "cf_agent_use_chat_response", "id": "ownall01", "body": "", "done": True, "replay": True}]


async def test_a_tab_watching_a_stream_that_probes_and_acks_gets_a_replay_then_the_tail_and_one_done(open_socket, token):
    sender = await ready(open_socket, token)
    watcher = await ready(open_socket, token)
    await sender.chat("watch001", [user_message("go", "u1")], words=15, delay=0.03)
    await watcher.until(lambda f: '"w3 "' in f.get("body", ""))
    before = len(watcher.received)
    await watcher.send({"type": "cf_agent_stream_resume_request", "probeId": "probe003"})
    await watcher.until(lambda f: f.get("probeId") == "probe003")
    await watcher.send({"type": "cf_agent_stream_resume_ack", "id": "watch001"})
    await watcher.until(is_done("watch001"))
    after_ack = stream_of(watcher.received[before:], "watch001")
    replay_start = next(i for i, f in enumerate(after_ack) if f.get("replay"))
    # Live frames before the ACK took effect, then the full replay, the marker, the live tail.
    assert_one_pass_then_done([f for f in after_ack[replay_start:] if not f.get("replayComplete")], 15)
    assert sum(1 for f in stream_of(watcher.received, "watch001") if f["done"]) == 1


async def test_an_offer_acknowledged_after_that_stream_ended_and_the_next_began_still_ends_it(open_socket, token):
    sender = await ready(open_socket, token)
    await sender.chat("first001", [user_message("one", "u1")], words=6, delay=0.05)
    await sender.until(lambda f: '"w1 "' in f.get("body", ""))
    late = await open_socket(PATH, token=token)
    assert await late.next() == {"type": "cf_agent_stream_resuming", "id": "first001"}
    await late.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    await sender.until(is_done("first001"))
    await sender.chat("second01", [user_message("one", "u1"), user_message("two", "u2")], words=10, delay=0.05)
    await sender.until(lambda f: f.get("id") == "second01" and f.get("body"))  # the next turn streams
    await late.send({"type": "cf_agent_stream_resume_ack", "id": "first001"})
    frames = await late.until(is_done("first001"))
    assert text_of(stream_of(frames, "first001")) == "".join(f"w{i} " for i in range(6))
    assert stream_of(frames, "first001")[-1] == {"type": "cf_agent_use_chat_response", "id": "first001", "body": "", "done": True, "replay": True}
    # The turn streaming meanwhile then reaches it from its first chunk.
    await late.until(is_done("second01"))
    assert_one_pass_then_done(stream_of(late.received, "second01"), 10)
