"""The fake upstream speaks OpenAI chat completions well enough for the real `openai` SDK."""
from __future__ import annotations

import openai
import pytest

from agents_app.testing.fake_openai import Reply, ToolCallSpec


@pytest.fixture
def sdk(fake_openai):
    return openai.OpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=0)


def stream(sdk, **kwargs):
    return list(sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}, **kwargs))


def test_streamed_text_arrives_in_the_scripted_pieces(fake_openai, sdk):
    fake_openai.script(Reply.text("Hello world", chunks=["Hel", "lo ", "world"]))
    chunks = stream(sdk)
    assert [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content] == ["Hel", "lo ", "world"]
    assert chunks[-1].usage.total_tokens > 0


def test_parallel_tool_calls_assemble_from_fragments(fake_openai, sdk):
    fake_openai.script(Reply.tool_calls([ToolCallSpec("a", '{"x": 1}', id="c1", fragments=3), ToolCallSpec("b", '{"y": 2}', id="c2")]))
    calls: dict[int, dict] = {}
    for chunk in stream(sdk):
        for choice in chunk.choices:
            for fragment in choice.delta.tool_calls or []:
                entry = calls.setdefault(fragment.index, {"id": fragment.id, "name": fragment.function.name, "arguments": ""})
                entry["arguments"] += fragment.function.arguments or ""
    assert calls == {0: {"id": "c1", "name": "a", "arguments": '{"x": 1}'}, 1: {"id": "c2", "name": "b", "arguments": '{"y": 2}'}}


def test_reasoning_content_streams_before_the_answer(fake_openai, sdk):
    fake_openai.script(Reply.with_reasoning("think hard", "answer"))
    deltas = [c.choices[0].delta for c in stream(sdk) if c.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "think hard"


def test_non_streamed_completions(fake_openai, sdk):
    fake_openai.script(Reply.text("whole answer"))
    completion = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "whole answer" and completion.usage.total_tokens > 0


def test_scripted_errors_surface_as_sdk_errors(fake_openai, sdk):
    fake_openai.script(Reply.error(500, "boom"), Reply.error(429, "slow down", retry_after=7))
    with pytest.raises(openai.InternalServerError, match="boom"):
        stream(sdk)
    with pytest.raises(openai.RateLimitError) as caught:
        stream(sdk)
    assert caught.value.response.headers["Retry-After"] == "7"


def test_requests_are_recorded_in_order(fake_openai, sdk):
    stream(sdk)
    stream(sdk)
    assert fake_openai.request_count == 2 and fake_openai.requests[0]["messages"][0]["content"] == "hi"


def test_without_a_script_the_model_echoes(fake_openai, sdk):
    text = "".join(c.choices[0].delta.content or "" for c in stream(sdk) if c.choices)
    assert text == "You said: hi"


def test_a_client_closing_the_stream_early_is_counted(fake_openai, sdk):
    fake_openai.script(Reply.text("a b c d e f g h", delay=0.2))
    response = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    next(iter(response))
    response.close()
    assert fake_openai.wait_for_disconnect(5)
