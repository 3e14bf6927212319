"""generate_object: validated pydantic objects from the model, with a retry on bad JSON
(issue #4 point 10). Every attempt is a model call through the gateway (streamed, logged)."""
from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from agents_app.gateway.models import ModelCall
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.think.structured import ObjectGenerationError, generate_object
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.agents import Sentiment
from tests.conftest import user_message

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_answer_is_a_validated_object_requested_with_the_json_schema(model):
    model.script(Reply.json({"label": "positive", "confidence": 0.9}))
    sentiment = await generate_object(None, Sentiment, "I love it")
    assert sentiment == Sentiment(label="positive", confidence=0.9)
    request = model.requests[0]
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"] == {"name": "Sentiment", "schema": Sentiment.model_json_schema()}
    assert request["messages"][-1] == {"role": "user", "content": "I love it"}
    assert request["model"] == "fake-model" and request["stream"] is True  # the gateway streams every call
    assert await ModelCall.objects.filter(model="fake-model", status="ok").acount() == 1  # and logs it


async def test_invalid_json_is_sent_back_and_the_retry_succeeds(model):
    model.script(Reply.text('{"label": "negative", '), Reply.json({"label": "negative", "confidence": 0.7}))
    sentiment = await generate_object("other-model", Sentiment, "Awful", mode="json_object")
    assert sentiment.label == "negative"
    retry = model.requests[1]
    assert retry["model"] == "other-model" and retry["response_format"] == {"type": "json_object"}
    assert retry["messages"][-2] == {"role": "assistant", "content": '{"label": "negative", '}
    assert retry["messages"][-1]["content"].startswith("The answer was not valid JSON")


async def test_an_object_that_never_matches_the_schema_raises_with_the_reason(model):
    model.script(Reply.json({"label": "angry", "confidence": 1}), Reply.json({"label": "angry", "confidence": 1}))
    with pytest.raises(ObjectGenerationError) as raised:
        await generate_object(None, Sentiment, "Grr")
    assert "label: Input should be 'positive', 'negative' or 'neutral'" in str(raised.value)
    assert json.loads(raised.value.text) == {"label": "angry", "confidence": 1}
    assert model.request_count == 2


async def test_a_tool_can_generate_an_object_and_hand_it_to_the_model(model, user):
    model.script(
        Reply.tool_calls([ToolCallSpec("classify", '{"text": "great service"}', id="k1")]),
        Reply.json({"label": "positive", "confidence": 0.8}),
        Reply.text("The review is positive."),
    )
    session = await sync_to_async(resolve_session)("stepped-agent", "structured", user)
    agent = await sync_to_async(load_agent)(session)
    result = await agent.save_messages([user_message("How does this review sound?", "u1")])
    part = next(p for p in result.message["parts"] if p.get("toolCallId") == "k1")
    assert part["output"] == {"label": "positive", "confidence": 0.8}
    assert model.requests[2]["messages"][-1] == {"role": "tool", "tool_call_id": "k1", "content": json.dumps(part["output"])}
