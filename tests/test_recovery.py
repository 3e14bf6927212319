"""Recovery of a turn whose process was killed (kill -9) while it streamed, by the process a
client reconnects to (think.md §9, protocol §9.14)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from agents_app.protocol.messages import text_of
from agents_app.turns import recovery
from agents_app.turns.instances import resolve_session
from agents_app.storage import chunk_log, client_messages, transcript
from agents_app.storage.models import Turn
from agents_app.testing.fake_openai import Reply
from tests.conftest import is_done, user_message
from tests.plugins.celery_worker import FAST_RECOVERY
from tests.plugins.live_server import ROOT, child_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


def streaming_turn() -> Turn | None:
    """The running turn once its stored chunks reach the word w5."""
    turn = Turn.objects.filter(status=Turn.Status.STREAMING).first()
    if turn is None or not any("w5" in body for _, body in chunk_log.read_bodies(turn.pk) if body):
        return None
    return turn


async def test_a_turn_whose_process_was_killed_is_continued_where_a_client_reconnects(model, user, token, open_socket, settings):
    settings.AGENTS_TURN_STALE_SECONDS = 2
    model.script(Reply.text(" ".join(f"w{i}" for i in range(100)), delay=0.1), Reply.text(" and the rest."))
    log = open(ROOT / "test-artifacts" / "killed-turn.log", "wb")  # noqa: SIM115 - closed below
    doomed = subprocess.Popen(
        [sys.executable, "manage.py", "agent_turn", "chat-agent", "killed", "Tell me a long story", "--user", "alice"],
        cwd=ROOT, env=child_env(model.base_url, FAST_RECOVERY), stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            turn = await sync_to_async(streaming_turn)()
            if turn is not None:
                break
            await asyncio.sleep(0.1)
        assert turn is not None, "the turn never started streaming"
        os.kill(doomed.pid, signal.SIGKILL)
    finally:
        doomed.wait(timeout=10)
        log.close()
    for _ in range(100):  # until its heartbeat is stale by the server's own rule
        if turn.pk in await sync_to_async(recovery.interrupted_turn_ids)():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the killed turn's heartbeat never went stale")

    tab = await open_socket("/agents/chat-agent/killed", token=token)
    assert await tab.next() == {"type": "cf_agent_stream_resuming", "id": turn.request_id}
    await tab.send({"type": "cf_agent_stream_resume_ack", "id": turn.request_id})
    frames = await tab.until(lambda f: f == {"type": "cf_agent_chat_recovering", "recovering": False, "id": turn.request_id}, timeout=20)
    replay_end = next(f for f in frames if f.get("id") == turn.request_id and f.get("done"))
    assert replay_end["replay"] is True
    assert {"type": "cf_agent_chat_recovering", "recovering": True, "id": turn.request_id} in frames
    session = await sync_to_async(resolve_session)("chat-agent", "killed", user)
    messages = await sync_to_async(transcript.transcript)(session)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert text_of(messages[-1]).startswith("w0 w1 w2 w3 w4 w5") and text_of(messages[-1]).endswith("and the rest.")
    assert len(model.requests) == 2 and model.requests[1]["messages"][-1]["role"] == "assistant"


async def test_a_turn_left_queued_by_a_dead_process_is_answered_and_no_longer_blocks_the_session(open_socket, token, user, settings):
    settings.AGENTS_TURN_STALE_SECONDS = 2
    session = await sync_to_async(resolve_session)("scripted-agent", "stuck", user)

    def left_behind() -> Turn:
        client_messages.upsert(session, [user_message("anyone there?", "u1")], move_leaf=True)
        return Turn.objects.create(session=session, request_id="deadq001", status=Turn.Status.QUEUED, heartbeat_at=timezone.now() - timedelta(minutes=1))

    dead = await sync_to_async(left_behind)()
    assert await sync_to_async(recovery.interrupted_turn_ids)() == [dead.pk]
    result = await recovery.recover(dead.pk)
    assert result is not None and result.status == "completed"
    messages = await sync_to_async(transcript.transcript)(session)
    assert [m["role"] for m in messages] == ["user", "assistant"] and text_of(messages[-1]) == "w0 w1 w2 w3 w4 "

    socket = await open_socket("/agents/scripted-agent/stuck", token=token, wait_ready=True)
    await socket.chat("after001", [*messages, user_message("and now?", "u2")], words=1)
    await socket.until(is_done("after001"))
    assert await sync_to_async(lambda: Turn.objects.get(request_id="after001").status)() == "completed"
