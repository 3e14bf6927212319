"""Message concurrency strategies for overlapping submits (protocol §9.12)."""
from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from agents_app.protocol.messages import text_of
from agents_app.turns.instances import resolve_session
from agents_app.storage import transcript
from agents_app.storage.models import Agent, Turn
from tests.conftest import is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
PATH = "/agents/scripted-agent/concurrency"


async def use_strategy(strategy, user):
    session = await sync_to_async(resolve_session)("scripted-agent", "concurrency", user)
    await sync_to_async(Agent.objects.filter(slug="scripted-agent").update)(settings={"message_concurrency": strategy})
    return session


async def three_overlapping_submits(open_socket, token):
    socket = await open_socket(PATH, token=token)
    await socket.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    u1, u2, u3 = user_message("First", "u1"), user_message("Second", "u2"), user_message("Third", "u3")
    await socket.chat("conc0001", [u1], words=8, delay=0.05)
    await socket.until(lambda f: '"w0 "' in f.get("body", ""))
    await socket.chat("conc0002", [u1, u2], words=2)
    await socket.chat("conc0003", [u1, u2, u3], words=2)
    return socket


async def statuses(session):
    return await sync_to_async(lambda: dict(Turn.objects.filter(session=session).values_list("request_id", "status")))()


async def wait_all_finished(session, count=3):
    for _ in range(200):
        found = await statuses(session)
        if len(found) == count and all(s in Turn.FINISHED for s in found.values()):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(await statuses(session))


async def test_queue_runs_every_submit_in_order(open_socket, token, user):
    session = await use_strategy("queue", user)
    socket = await three_overlapping_submits(open_socket, token)
    await socket.until(is_done("conc0003"))
    assert await wait_all_finished(session) == {"conc0001": "completed", "conc0002": "completed", "conc0003": "completed"}


async def test_latest_skips_superseded_submits_and_answers_the_newest(open_socket, token, user):
    session = await use_strategy("latest", user)
    socket = await three_overlapping_submits(open_socket, token)
    frames = await socket.until(is_done("conc0003"))
    skipped = [f for f in frames if f.get("id") == "conc0002"]
    assert skipped == [{"type": "cf_agent_use_chat_response", "id": "conc0002", "body": "", "done": True}]
    assert await wait_all_finished(session) == {"conc0001": "completed", "conc0002": "skipped", "conc0003": "completed"}
    roles = [m["role"] for m in await sync_to_async(transcript.transcript)(session)]
    assert roles == ["user", "assistant", "user", "user", "assistant"]


async def test_merge_collapses_the_queued_user_messages_into_one(open_socket, token, user):
    session = await use_strategy("merge", user)
    socket = await three_overlapping_submits(open_socket, token)
    await socket.until(is_done("conc0003"))
    await wait_all_finished(session)
    messages = await sync_to_async(transcript.transcript)(session)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2]["id"] == "u3" and text_of(messages[2]) == "Second\n\nThird"


async def test_drop_rejects_overlapping_submits_before_storing_them(open_socket, token, user):
    session = await use_strategy("drop", user)
    socket = await three_overlapping_submits(open_socket, token)
    frames = await socket.until(is_done("conc0002"))
    assert frames[-2]["type"] == "cf_agent_chat_messages" and [m["id"] for m in frames[-2]["messages"]] == ["u1"]
    await socket.until(is_done("conc0001"))
    if not any(is_done("conc0003")(frame) for frame in socket.received):
        await socket.until(is_done("conc0003"))  # the third submit is refused too
    assert await statuses(session) == {"conc0001": "completed"}
    assert not await sync_to_async(session.messages.filter(uid__in=["u2", "u3"]).exists)()


async def test_debounce_waits_for_quiet_then_answers_only_the_last(open_socket, token, user):
    session = await use_strategy({"strategy": "debounce", "debounceMs": 300}, user)
    socket = await three_overlapping_submits(open_socket, token)
    await socket.until(is_done("conc0003"))
    assert await wait_all_finished(session) == {"conc0001": "completed", "conc0002": "skipped", "conc0003": "completed"}


async def test_debounce_answers_the_first_message_of_an_idle_agent_at_once(open_socket, token, user):
    session = await use_strategy({"strategy": "debounce", "debounceMs": 30_000}, user)
    socket = await open_socket(PATH, token=token, wait_ready=True)
    await socket.chat("idle0001", [user_message("Hello", "u1")], words=2)
    # Within 10 s, a third of the quiet window: nothing overlapped, so nothing waits.
    await socket.until(is_done("idle0001"), timeout=10)
    assert await wait_all_finished(session, count=1) == {"idle0001": "completed"}
