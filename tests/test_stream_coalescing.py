"""Under load a stream's deltas travel in fewer frames; alone, every delta goes out as it comes.

Every frame costs a serialisation, a channel-layer hop, a consumer dispatch and a socket
write whatever it carries, so with many streams in one process the publisher waits a few
milliseconds for more deltas to merge into a frame (turns/stream_publisher.py)."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from agents_app.storage import chunk_log
from agents_app.storage.models import Turn
from agents_app.turns import stream_publisher
from agents_app.turns.broadcast import session_group
from agents_app.turns.instances import resolve_session
from agents_app.turns.stream_publisher import StreamPublisher

pytestmark = pytest.mark.django_db(transaction=True)


def _turn(user: Any, name: str) -> Turn:
    session = resolve_session("scripted-agent", name, user)
    return Turn.objects.create(session=session, request_id=f"req-{name}", status=Turn.Status.RUNNING)


async def _started_publishers(user: Any, count: int) -> list[StreamPublisher]:
    publishers = []
    for index in range(count):
        turn = await sync_to_async(_turn)(user, f"coalesce-{index}")
        publisher = StreamPublisher(turn.session_id, turn.pk, turn.request_id, continuation=False)
        publisher.begin(f"msg-{index}")
        publishers.append(publisher)
    return publishers


async def _stream_text(publisher: StreamPublisher, words: list[str], pace: float) -> list[dict[str, Any]]:
    """Publish `words` as deltas `pace` seconds apart; the text-delta chunks a listener got."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(session_group(publisher.session_id), channel)
    publisher.publish({"type": "text-start", "id": "t"})
    for word in words:
        publisher.publish({"type": "text-delta", "id": "t", "delta": word})
        await asyncio.sleep(pace)
    publisher.publish({"type": "text-end", "id": "t"})
    await publisher.flush()
    deltas = []
    while True:
        message = await asyncio.wait_for(layer.receive(channel), 5)
        if message["type"] != "agent.stream":  # the stream's start, announced beside its frames
            continue
        chunks = [json.loads(frame["body"]) for _, frame in message["frames"]]
        deltas += [chunk for chunk in chunks if chunk["type"] == "text-delta"]
        if any(chunk["type"] == "text-end" for chunk in chunks):
            return deltas


async def test_with_many_streams_in_the_process_deltas_share_frames_and_the_text_is_exact(user: Any) -> None:
    words = [f"w{index} " for index in range(20)]
    publishers = await _started_publishers(user, 31)  # a 30 ms coalescing window
    try:
        deltas = await _stream_text(publishers[0], words, pace=0.005)
    finally:
        for publisher in publishers[1:]:
            await publisher.flush()
    assert "".join(chunk["delta"] for chunk in deltas) == "".join(words)
    assert deltas[0]["delta"] == words[0]  # the first output is never held back
    assert len(deltas) <= len(words) // 2


async def test_a_lone_stream_sends_every_delta_in_its_own_frame(user: Any) -> None:
    words = [f"w{index} " for index in range(8)]
    (publisher,) = await _started_publishers(user, 1)
    deltas = await _stream_text(publisher, words, pace=0.02)
    assert [chunk["delta"] for chunk in deltas] == words


async def _stored_deltas(publisher: StreamPublisher) -> list[str]:
    bodies = await sync_to_async(chunk_log.read_bodies)(publisher.turn_id)
    return [json.loads(body)["delta"] for _, body in bodies if body and json.loads(body)["type"] == "text-delta"]


async def test_a_stream_that_pauses_has_what_it_broadcast_stored_within_the_store_interval(user: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(stream_publisher, "STORE_INTERVAL", 0.2)
    (publisher,) = await _started_publishers(user, 1)
    publisher.publish({"type": "text-start", "id": "t"})
    for word in ("a ", "tool ", "runs "):
        publisher.publish({"type": "text-delta", "id": "t", "delta": word})
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.6)  # nothing more is published while the tool runs
    assert await _stored_deltas(publisher) == ["a ", "tool ", "runs "]
    await publisher.flush()


async def test_a_follower_joining_has_the_turn_stored_at_its_pace(user: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(stream_publisher, "STORE_INTERVAL", 3600)
    monkeypatch.setattr(stream_publisher, "FOLLOWED_STORE_INTERVAL", 0.1)
    (publisher,) = await _started_publishers(user, 1)
    publisher.publish({"type": "text-start", "id": "t"})
    publisher.publish({"type": "text-delta", "id": "t", "delta": "early "})
    await asyncio.sleep(0.2)
    assert await _stored_deltas(publisher) == []
    with stream_publisher.followed(publisher.turn_id):
        await asyncio.sleep(0.5)
        assert await _stored_deltas(publisher) == ["early "]
    await publisher.flush()


async def test_a_publishers_wait_ends_when_woken_or_when_its_time_is_up() -> None:
    loop = asyncio.get_running_loop()
    woken, timed = stream_publisher._Wakeup(), stream_publisher._Wakeup()
    started = loop.time()
    waits = [asyncio.ensure_future(woken.wait(30)), asyncio.ensure_future(timed.wait(0.05))]
    await asyncio.sleep(0.01)
    woken.set()
    await asyncio.wait_for(waits[0], 1)  # not 30 s later
    await asyncio.wait_for(waits[1], 1)
    assert 0.05 <= loop.time() - started < 1
