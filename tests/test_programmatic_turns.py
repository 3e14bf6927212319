"""Turns started from code, a Celery task body and the command line (think.md §8, protocol §9.9)."""
from __future__ import annotations

import json
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from agents_app.protocol.messages import text_of
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.storage import transcript
from agents_app.testing.fake_openai import Reply
from tests.conftest import user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


async def agent_for(user, name="programmatic", segment="scripted-agent"):
    session = await sync_to_async(resolve_session)(segment, name, user)
    return await sync_to_async(load_agent)(session)


async def test_save_messages_runs_a_turn_that_connected_clients_see_stream(open_socket, token, user):
    watcher = await open_socket("/agents/scripted-agent/programmatic", token=token)
    await watcher.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    agent = await agent_for(user)
    result = await agent.save_messages([user_message("from code", "p1")])
    assert result.status == "completed" and result.request_id
    frames = await watcher.until(lambda f: f["type"] == "cf_agent_chat_messages" and len(f["messages"]) == 2)
    streamed = [f for f in frames if f.get("type") == "cf_agent_use_chat_response" and f["id"] == result.request_id]
    assert streamed and streamed[-1]["done"] is True
    assert [m["role"] for m in frames[-1]["messages"]] == ["user", "assistant"]


async def test_the_function_form_sees_the_transcript_when_the_turn_starts(user):
    agent = await agent_for(user)
    await agent.save_messages([user_message("first", "p1")])
    seen = []

    def follow_up(messages):
        seen.extend(m["id"] for m in messages)
        return [*messages, user_message(f"after {len(messages)} messages", "p2")]

    await agent.save_messages(follow_up)
    assert seen[0] == "p1" and len(seen) == 2
    messages = await agent.get_messages()
    assert [text_of(m) for m in messages][2] == "after 2 messages"


async def test_continue_last_turn_is_skipped_without_an_assistant_message(user):
    agent = await agent_for(user)
    result = await agent.continue_last_turn()
    assert result.as_dict() == {"requestId": "", "status": "skipped"}


async def test_continue_last_turn_extends_the_last_answer(user):
    agent = await agent_for(user)
    await agent.save_messages([user_message("go", "p1")])
    before = await agent.get_messages()
    result = await agent.continue_last_turn({"words": 1})
    after = await agent.get_messages()
    assert result.status == "completed"
    assert after[-1]["id"] == before[-1]["id"] and text_of(after[-1]) == text_of(before[-1]) + "w0 "


async def test_persist_messages_stores_without_a_turn(user):
    agent = await agent_for(user)
    await agent.persist_messages([user_message("just stored", "p9")])
    assert [m["id"] for m in await agent.get_messages()] == ["p9"]


def test_the_management_command_runs_a_turn(user, model):
    model.script(Reply.text("Done from the shell."))
    out = StringIO()
    call_command("agent_turn", "chat-agent", "cli", "Hello from the shell", user="alice", stdout=out)
    first_line, text = out.getvalue().splitlines()
    assert json.loads(first_line)["status"] == "completed" and text == "Done from the shell."
    session = resolve_session("chat-agent", "cli", user)
    assert [m["role"] for m in transcript.transcript(session)] == ["user", "assistant"]


def test_the_celery_task_body_runs_a_turn(user, model):
    from agents_app.tasks import run_turn

    model.script(Reply.text("Done from Celery."))
    assert run_turn("chat-agent", "celery", "Hello from a worker", "alice")["status"] == "completed"
