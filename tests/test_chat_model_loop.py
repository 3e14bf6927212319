"""`stream_chat`: Think's model loop for an AIChatAgent that writes its own `on_chat_message`
(tools over several steps, max_steps, prepare_step, on_finish, abort)."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents_app.agents import (
    AIChatAgent,
    ChatOptions,
    ChatResponse,
    ChatStreamResult,
    RedactionMiddleware,
    StepConfig,
    StepContext,
    client_tool,
    register_agent,
    stream_chat,
    text_of,
    tool,
)
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from agents_app.storage import transcript
from agents_app.turns.instances import resolve_session
from tests.conftest import chunks_of, is_done, user_message

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/agents/weather-loop-agent/loop"
FINISHED: list[ChatStreamResult] = []


@tool("Get the weather for a city")
def get_weather(city: str) -> dict[str, Any]:
    return {"city": city, "tempC": 21}


@tool("Refund an order", needs_approval=True)
def refund(order: int) -> dict[str, Any]:
    return {"refunded": order}


def wrap_up_after_a_tool(context: StepContext) -> StepConfig | None:
    return StepConfig(model="wrap-up-model", system="Answer in one line.") if context.steps else None


@register_agent
class WeatherLoopAgent(AIChatAgent):
    async def on_chat_message(self, options: ChatOptions) -> ChatResponse:
        return stream_chat(
            options,
            system="You report the weather.",
            tools={"get_weather": get_weather, "refund": refund, "pick_city": client_tool("pick_city", "Ask the user for a city")},
            max_steps=int((options.body or {}).get("maxSteps", 3)),
            prepare_step=wrap_up_after_a_tool,
            middleware=[RedactionMiddleware(r"secret-[a-z]+")],
            on_finish=FINISHED.append,
        )


@pytest.fixture(autouse=True)
def no_finished_calls() -> None:
    FINISHED.clear()


async def turn(open_socket: Any, token: str, request_id: str, **body: Any) -> list[dict[str, Any]]:
    socket = await open_socket(PATH, token=token, wait_ready=True)
    await socket.chat(request_id, [user_message("Weather in Paris?")], **body)
    return chunks_of(await socket.until(is_done(request_id)), request_id)


async def test_a_server_tool_round_trip_takes_two_steps_and_the_model_reads_the_result(open_socket, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("get_weather", '{"city": "Paris"}', id="c1")]), Reply.text("Sunny, 21C."))
    chunks = await turn(open_socket, token, "loop0001")
    assert [c["type"] for c in chunks].count("start-step") == 2
    assert {"type": "tool-output-available", "toolCallId": "c1", "output": {"city": "Paris", "tempC": 21}} in chunks
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "Sunny, 21C."
    assert model.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": '{"city": "Paris", "tempC": 21}'}


async def test_max_steps_bounds_the_model_calls(open_socket, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("get_weather", '{"city": "Paris"}', id="c1")]), Reply.text("unused"))
    chunks = await turn(open_socket, token, "loop0002", maxSteps=1)
    assert model.request_count == 1
    assert [c["type"] for c in chunks].count("start-step") == 1 and chunks[-1]["type"] == "finish"


async def test_prepare_step_changes_the_model_and_system_of_later_steps(open_socket, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("get_weather", '{"city": "Paris"}', id="c1")]), Reply.text("Sunny."))
    await turn(open_socket, token, "loop0003")
    first, second = model.requests
    assert first["model"] == "fake-model" and first["messages"][0] == {"role": "system", "content": "You report the weather."}
    assert second["model"] == "wrap-up-model" and second["messages"][0] == {"role": "system", "content": "Answer in one line."}


async def test_on_finish_receives_the_final_text_and_the_usage_of_every_step(open_socket, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("get_weather", '{"city": "Paris"}', id="c1")]), Reply.text("Sunny, 21C."))
    chunks = await turn(open_socket, token, "loop0004")
    [result] = FINISHED
    assert result.text == "Sunny, 21C." and result.finish_reason == "stop" and len(result.steps) == 2
    assert result.usage == chunks[-1]["messageMetadata"]["usage"]
    assert result.usage["totalTokens"] == sum(step.usage["totalTokens"] for step in result.steps) > 0


async def test_a_client_tool_pauses_the_turn_for_the_browser(open_socket, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("pick_city", "{}", id="c1")]))
    chunks = await turn(open_socket, token, "loop0005")
    assert {"type": "tool-input-available", "toolCallId": "c1", "toolName": "pick_city", "input": {}} in chunks
    assert model.request_count == 1 and not any(c["type"].startswith("tool-output") for c in chunks)


async def test_an_approved_call_runs_in_the_continuation_and_the_model_answers(open_socket, token, model, user):
    model.script(Reply.tool_calls([ToolCallSpec("refund", '{"order": 7}', id="r1")]), Reply.text("Refunded."))
    socket = await open_socket(PATH, token=token, wait_ready=True)
    await socket.chat("loop0007", [user_message("Refund order 7", "u1")])
    chunks = chunks_of(await socket.until(is_done("loop0007")), "loop0007")
    assert any(c["type"] == "tool-approval-request" and c["toolCallId"] == "r1" for c in chunks) and model.request_count == 1
    await socket.send({"type": "cf_agent_tool_approval", "toolCallId": "r1", "approved": True, "autoContinue": True})
    resuming = await socket.until(lambda f: f["type"] == "cf_agent_stream_resuming")
    await socket.send({"type": "cf_agent_stream_resume_ack", "id": resuming[-1]["id"]})
    continued = chunks_of(await socket.until(is_done(resuming[-1]["id"])), resuming[-1]["id"])
    assert {"type": "tool-output-available", "toolCallId": "r1", "output": {"refunded": 7}} in continued
    session = await sync_to_async(resolve_session)("weather-loop-agent", "loop", user)
    assert text_of((await sync_to_async(transcript.transcript)(session))[-1]).endswith("Refunded.")


async def test_model_middleware_rewrites_what_clients_receive(open_socket, token, model):
    model.script(Reply.text("The code is secret-abc."))
    chunks = await turn(open_socket, token, "loop0008")
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "The code is [redacted]."


async def test_cancelling_the_turn_closes_the_upstream_and_skips_on_finish(open_socket, token, model):
    # Long enough that text gets past the redaction middleware's look-behind well before the end.
    model.script(Reply.text("counting " * 60, chunk_size=20, delay=0.1))
    socket = await open_socket(PATH, token=token, wait_ready=True)
    await socket.chat("loop0006", [user_message("Count slowly")])
    await socket.until(lambda f: f.get("body", "").startswith('{"type":"text-delta"'))
    await socket.send({"type": "cf_agent_chat_request_cancel", "id": "loop0006"})
    await socket.until(is_done("loop0006"))
    assert await sync_to_async(model.wait_for_disconnect)(5)
    assert FINISHED == []


async def test_a_signal_ends_the_stream_with_an_abort_chunk_and_closes_the_upstream(model):
    model.script(Reply.text("one two three four five six seven eight", chunk_size=4, delay=0.2))
    signal = asyncio.Event()
    seen = []
    async for chunk in stream_chat([user_message("Count slowly")], signal=signal, on_finish=FINISHED.append):
        seen.append(chunk)
        if chunk["type"] == "text-delta":
            signal.set()
    assert seen[-1] == {"type": "abort"} and "finish" not in [c["type"] for c in seen]
    assert await sync_to_async(model.wait_for_disconnect)(5)
    assert FINISHED == []
