"""Reasoning parts: from `reasoning_content` deltas, and from `<think>` tags in the text through
ExtractReasoningMiddleware; a resumed stream replays them (protocol §10.4, think.md §2)."""
from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from agents_app.turns.instances import load_agent, resolve_session
from agents_app.testing.fake_openai import Reply
from tests.conftest import chunks_of, is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
PATH = "/agents/thinking-agent/reasoning"


@pytest.fixture(autouse=True)
def _long_agents() -> None:
    import tests.long_agents  # noqa: F401 - registers the agents


async def stored_reply(user) -> dict:
    session = await sync_to_async(resolve_session)("thinking-agent", "reasoning", user)
    return (await (await sync_to_async(load_agent)(session)).get_messages())[-1]


def visible(message: dict) -> list[tuple[str, str]]:
    return [(p["type"], p["text"]) for p in message["parts"] if p["type"] in ("reasoning", "text")]


async def test_think_tags_in_the_text_become_a_reasoning_part(open_socket, token, model, user):
    model.script(Reply.text("<think>The user greets me; greet back.</think>\n\nHello!", chunks=["<thi", "nk>The user greets", " me; greet back.</th", "ink>\n\nHel", "lo!"]))
    socket = await open_socket(PATH, token=token, wait_ready=True)
    await socket.chat("reas0001", [user_message("Hi", "u1")])
    chunks = chunks_of(await socket.until(is_done("reas0001")), "reas0001")
    assert "".join(c["delta"] for c in chunks if c["type"] == "reasoning-delta") == "The user greets me; greet back."
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "Hello!"
    assert visible(await stored_reply(user)) == [("reasoning", "The user greets me; greet back."), ("text", "Hello!")]


async def test_streamed_reasoning_content_becomes_a_reasoning_part(open_socket, token, model, user):
    model.script(Reply.with_reasoning("Two plus two is four.", "It is 4."))
    socket = await open_socket(PATH, token=token, wait_ready=True)
    await socket.chat("reas0002", [user_message("2+2?", "u1")])
    await socket.until(is_done("reas0002"))
    assert visible(await stored_reply(user)) == [("reasoning", "Two plus two is four."), ("text", "It is 4.")]


async def test_a_resumed_stream_replays_its_reasoning(open_socket, token, model, user):
    model.script(Reply.with_reasoning("First add the units, then the tens.", "The sum is fifty-five.", delay=0.05))
    first = await open_socket(PATH, token=token, wait_ready=True)
    await first.chat("reas0003", [user_message("23 + 32?", "u1")])
    await first.until(lambda f: '"text-delta"' in f.get("body", ""))
    await first.close()
    second = await open_socket(PATH, token=token, connection_id=first.connection_id)
    await second.until(lambda f: f == {"type": "cf_agent_stream_resuming", "id": "reas0003"})
    await second.send({"type": "cf_agent_stream_resume_ack", "id": "reas0003"})
    chunks = chunks_of(await second.until(is_done("reas0003")), "reas0003")
    assert "".join(c["delta"] for c in chunks if c["type"] == "reasoning-delta") == "First add the units, then the tens."
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "The sum is fifty-five."
    assert visible(await stored_reply(user)) == [("reasoning", "First add the units, then the tens."), ("text", "The sum is fifty-five.")]
