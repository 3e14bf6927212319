"""The default `queue` strategy answers every queued message in order, the model seeing the
conversation up to that message and the earlier answers (issue: six quick sends used to leave
questions unanswered and answer the last one several times)."""
from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from agents_app.turns.instances import resolve_session
from agents_app.storage import transcript
from agents_app.storage.models import Session, Turn
from agents_app.testing.fake_openai import Reply
from tests.conftest import is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


async def test_queued_messages_are_answered_in_order_each_seeing_the_conversation_up_to_it(open_socket, token, model, user):
    model.script(*[Reply.text(f"Answer {i}", delay=0.05) for i in range(1, 7)])
    socket = await open_socket("/agents/chat-agent/queue-order", token=token, wait_ready=True)
    sent: list[dict] = []
    for index in range(1, 7):
        sent.append(user_message(f"Question {index}", f"q{index}"))
        await socket.chat(f"queue-{index}", list(sent))
    for index in range(1, 7):
        await socket.until(is_done(f"queue-{index}"), timeout=30)
    session = await sync_to_async(resolve_session)("chat-agent", "queue-order", user)
    stored = await sync_to_async(transcript.transcript)(session)
    texts = [part["text"] for message in stored for part in message["parts"] if part.get("type") == "text"]
    assert texts == [text for i in range(1, 7) for text in (f"Question {i}", f"Answer {i}")]
    for index, request in enumerate(model.requests, start=1):
        conversation = [m["content"] for m in request["messages"] if m["role"] in ("user", "assistant")]
        expected = [text for i in range(1, index) for text in (f"Question {i}", f"Answer {i}")] + [f"Question {index}"]
        assert conversation == expected


async def test_a_message_to_a_session_whose_lock_a_gone_turn_never_released_is_answered_at_once(open_socket, token, model, user):
    """A new message on a session with no other turn takes the lock as it is admitted; a lock
    that a turn which no longer exists left behind does not make it wait for staleness."""
    model.script(Reply.text("Still here"))
    socket = await open_socket("/agents/chat-agent/left-locked", token=token, wait_ready=True)
    session = await sync_to_async(resolve_session)("chat-agent", "left-locked", user)
    await sync_to_async(Session.objects.filter(pk=session.pk).update)(turn_lock="a-turn-that-is-gone")
    await socket.chat("after-the-gone-turn", [user_message("Anyone?", "q-gone")])
    await socket.until(is_done("after-the-gone-turn"), timeout=5)
    stored = await sync_to_async(transcript.transcript)(session)
    assert stored[-1]["parts"][-1]["text"] == "Still here"
    assert await sync_to_async(lambda: Turn.objects.get(request_id="after-the-gone-turn").status)() == "completed"
