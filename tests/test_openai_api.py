"""The OpenAI-compatible front door, driven by the `openai` Python SDK against a live server."""
from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from agents_app.turns.instances import resolve_session
from agents_app.storage import transcript
from agents_app.testing.fake_openai import Reply
from tests.plugins.live_server import LiveServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


@pytest.fixture
def sdk(live_server_process: LiveServer, token: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{live_server_process.url}/v1", api_key=token, max_retries=0, timeout=20) as client:
        yield client


def test_models_lists_the_chat_agents(sdk):
    ids = [model.id for model in sdk.models.list()]
    assert "chat-agent" in ids and "minimal-chat-agent" in ids and "scripted-agent" in ids
    assert "counter-agent" not in ids  # not a chat agent


def test_a_non_streamed_completion_is_the_agents_answer(sdk, model):
    model.script(Reply.text("Paris is the capital of France."))
    completion = sdk.chat.completions.create(model="chat-agent", messages=[{"role": "user", "content": "Capital of France?"}])
    assert completion.choices[0].message.content == "Paris is the capital of France."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    # The agent added its own system prompt in front of the user's question.
    upstream = model.requests[-1]["messages"]
    assert upstream[0]["role"] == "system" and upstream[-1] == {"role": "user", "content": "Capital of France?"}


def test_a_streamed_completion_arrives_as_chunks(sdk, model):
    model.script(Reply.text("one two three"))
    stream = sdk.chat.completions.create(
        model="chat-agent", messages=[{"role": "user", "content": "Count"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_agent_slash_name_keeps_the_conversation_in_that_session(sdk, model, user):
    model.script(Reply.text("Nice to meet you, Ada."), Reply.text("Your name is Ada."))
    first = [{"role": "user", "content": "I am Ada"}]
    answer = sdk.chat.completions.create(model="chat-agent/ada", messages=first).choices[0].message.content
    sdk.chat.completions.create(
        model="chat-agent/ada", messages=[*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "Who am I?"}]
    )
    stored = transcript.transcript(resolve_session("chat-agent", "ada", user))
    assert [(m["role"], m["parts"][-1]["text"]) for m in stored] == [
        ("user", "I am Ada"), ("assistant", "Nice to meet you, Ada."), ("user", "Who am I?"), ("assistant", "Your name is Ada."),
    ]
    # The second model call saw the stored history, each message once.
    assert [m["content"] for m in model.requests[-1]["messages"][1:]] == ["I am Ada", "Nice to meet you, Ada.", "Who am I?"]


def test_an_unknown_agent_is_a_model_not_found_error(sdk):
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model="no-such-agent", messages=[{"role": "user", "content": "Hi"}])
    assert "no-such-agent" in raised.value.message


def test_a_bad_token_is_an_authentication_error(live_server_process):
    with openai.OpenAI(base_url=f"{live_server_process.url}/v1", api_key="agt_wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


def test_an_upstream_failure_reaches_the_sdk_as_an_error(sdk, model):
    model.script(Reply.error(500, "the model is down"))
    with pytest.raises(openai.APIStatusError) as raised:
        sdk.chat.completions.create(model="chat-agent", messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.status_code == 502 and "the model is down" in raised.value.message


def test_a_streamed_upstream_failure_raises_in_the_sdk(sdk, model):
    model.script(Reply.error(500, "the model is down"))
    stream = sdk.chat.completions.create(model="chat-agent", messages=[{"role": "user", "content": "Hi"}], stream=True)
    with pytest.raises(openai.APIError) as raised:
        list(stream)
    assert "the model is down" in str(raised.value)
