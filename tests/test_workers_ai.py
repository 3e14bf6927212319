"""`ai.run`: Workers AI's text generation facade over the gateway, answered whole or as
Workers AI's server-sent events from an agent's `on_request`."""
from __future__ import annotations

import json

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient

from agents_app.agents import Agent, AiTextStream, ai, register_agent
from agents_app.gateway.models import ModelCall, Provider, Route, RouteEntry
from agents_app.testing.fake_openai import Reply
from agents_app.transport.responses import json_response

pytestmark = pytest.mark.django_db(transaction=True)
LLAMA = "@cf/meta/llama-3.1-8b-instruct"


@register_agent
class WorkersAiAgent(Agent):
    async def on_request(self, request: HttpRequest, path: str) -> HttpResponse | AiTextStream:
        question = request.GET.get("q", "Name a river.")
        if path == "ask":
            return json_response(await self.ai.run(LLAMA, {"prompt": question}))
        if path == "stream":
            return await self.ai.run(LLAMA, {"messages": [{"role": "user", "content": question}]}, stream=True)
        return await super().on_request(request, path)


async def test_a_prompt_is_answered_with_the_response_and_its_usage(token, model):
    model.script(Reply.text("The Danube."))
    response = await AsyncClient().get(f"/agents/workers-ai-agent/box/ask?token={token}")
    body = response.json()
    assert body["response"] == "The Danube." and body["usage"]["total_tokens"] > 0
    assert model.requests[0]["messages"] == [{"role": "user", "content": "Name a river."}]


async def test_the_streamed_form_returned_from_on_request_is_workers_ai_server_sent_events(token, model):
    model.script(Reply.text("The Danube flows east.", chunks=["The ", "Danube ", "flows east."]))
    response = await AsyncClient().get(f"/agents/workers-ai-agent/box/stream?token={token}")
    assert response["Content-Type"].startswith("text/event-stream")
    text = b"".join([piece async for piece in response.streaming_content]).decode()
    lines = [line for line in text.split("\n") if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert events == [{"response": "The "}, {"response": "Danube "}, {"response": "flows east."}]


async def test_the_model_name_is_an_alias_the_gateway_route_resolves(model):
    provider = await Provider.objects.acreate(name="main", base_url=model.base_url, api_key="sk-main")
    route = await Route.objects.acreate()
    await RouteEntry.objects.acreate(route=route, provider=provider, model="gpt-4o-mini")
    model.script(Reply.text("Routed."))
    assert (await ai.run(LLAMA, {"prompt": "Hi"}))["response"] == "Routed."
    assert model.requests[0]["model"] == "gpt-4o-mini"
    call = await ModelCall.objects.aget()
    assert (call.provider, call.model) == ("main", "gpt-4o-mini")


async def test_an_agents_calls_take_its_own_route_and_are_logged_for_its_user(token, model, user):
    provider = await Provider.objects.acreate(name="agent-route", base_url=model.base_url, api_key="sk-agent")
    route = await Route.objects.acreate(agent="workers-ai-agent")
    await RouteEntry.objects.acreate(route=route, provider=provider, model="agent-model")
    model.script(Reply.text("Routed for the agent."))
    response = await AsyncClient().get(f"/agents/workers-ai-agent/box/ask?token={token}")
    assert response.json()["response"] == "Routed for the agent." and model.requests[0]["model"] == "agent-model"
    call = await ModelCall.objects.aget()
    assert (call.agent, call.user_id, call.provider) == ("workers-ai-agent", user.pk, "agent-route")


async def test_a_call_takes_either_a_prompt_or_messages():
    with pytest.raises(ValueError, match="either `prompt` or `messages`"):
        await ai.run(LLAMA, {"prompt": "Hi", "messages": []})
