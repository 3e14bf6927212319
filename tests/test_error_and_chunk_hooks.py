"""The observation hooks an agent author overrides: `on_chat_error` decides what clients see of
a failure, `on_chunk` sees every chunk the model produces (think.md §5, protocol §9.5)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents_app.agents import AIChatAgent, ChatOptions, ChatResponse, ThinkAgent, register_agent, text_of
from agents_app.testing.fake_openai import Reply
from agents_app.turns.instances import load_agent, resolve_session
from tests.conftest import is_done, user_message

pytestmark = pytest.mark.django_db(transaction=True)


@register_agent
class PoliteFailureAgent(AIChatAgent):
    """Fails with internal details before or while streaming; tells clients something polite."""

    async def on_chat_message(self, options: ChatOptions) -> ChatResponse:
        if (options.body or {}).get("midway"):
            return self._breaks_midway()
        raise RuntimeError("db password rejected for host 10.0.0.7")

    async def _breaks_midway(self) -> AsyncIterator[str]:
        yield "Half an answer"
        raise RuntimeError("upstream socket reset by 10.0.0.7")

    def on_chat_error(self, error: BaseException) -> BaseException:
        return RuntimeError(f"Sorry, that failed ({type(error).__name__}). Please try again.")


@register_agent
class ChunkWatchingAgent(ThinkAgent):
    seen: list[dict[str, Any]] = []

    async def on_chunk(self, chunk: dict[str, Any]) -> None:
        self.seen.append(chunk)


async def test_on_chat_error_replaces_what_clients_see_of_a_failure_before_streaming(open_socket, token):
    socket = await open_socket("/agents/polite-failure-agent/before", token=token, wait_ready=True)
    await socket.chat("fail0001", [user_message("hi", "u1")])

    last = (await socket.until(is_done("fail0001")))[-1]

    assert last == {
        "type": "cf_agent_use_chat_response", "id": "fail0001", "done": True, "error": True,
        "body": "Sorry, that failed (RuntimeError). Please try again.",
    }
    assert not any("10.0.0.7" in str(frame) for frame in socket.received)


async def test_on_chat_error_replaces_what_clients_see_of_a_stream_that_breaks(open_socket, token):
    socket = await open_socket("/agents/polite-failure-agent/midway", token=token, wait_ready=True)
    await socket.chat("fail0002", [user_message("hi", "u1")], midway=True)

    frames = await socket.until(is_done("fail0002"))

    assert any("Half an answer" in frame.get("body", "") for frame in frames)
    assert "Sorry, that failed (RuntimeError). Please try again." in str(frames)
    assert not any("10.0.0.7" in str(frame) for frame in socket.received)


async def test_on_chunk_sees_every_text_delta_the_model_streamed_in_order(model, user, monkeypatch):
    monkeypatch.setattr(ChunkWatchingAgent, "seen", [])
    model.script(Reply.text("Agents answer one token at a time."))
    session = await sync_to_async(resolve_session)("chunk-watching-agent", "watch", user)
    agent = await sync_to_async(load_agent)(session)

    result = await agent.save_messages([user_message("How do agents answer?", "u1")])

    deltas = "".join(chunk["delta"] for chunk in ChunkWatchingAgent.seen if chunk.get("type") == "text-delta")
    assert deltas == text_of(result.message) == "Agents answer one token at a time."
    assert len([c for c in ChunkWatchingAgent.seen if c.get("type") == "text-delta"]) > 1
