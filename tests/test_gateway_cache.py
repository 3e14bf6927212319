"""The gateway's response cache: identical requests skip the upstream and replay as a
stream; `skipCache` bypasses it; `cacheTtl` turns it on for one call."""
from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.cache import cache
from django.test import AsyncClient

from agents_app.gateway.models import ModelCall, Route
from agents_app.testing.fake_openai import Reply

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    cache.clear()


def ask(client: Any, token: str, room: str, **extra: Any) -> dict[str, Any]:
    response = client.post(
        f"/agents/chat-agent/{room}/chat?format=json&token={token}", data={"text": "What is 6 × 7?", **extra}, content_type="application/json"
    )
    return response.json()


def text_of(result: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in result["message"]["parts"] if p["type"] == "text")


def test_an_identical_request_is_answered_from_the_cache(client, model, token):
    Route.objects.create(cache_ttl_seconds=60)  # no entries: the configured model, with caching on
    model.script(Reply.text("It is 42."))
    first, second = ask(client, token, "one"), ask(client, token, "two")
    assert text_of(first) == text_of(second) == "It is 42."
    assert model.request_count == 1
    calls = list(ModelCall.objects.order_by("id"))
    assert [c.cache_hit for c in calls] == [False, True]
    assert calls[1].input_tokens == calls[0].input_tokens and calls[1].cost == 0


async def test_a_cached_answer_is_replayed_as_a_stream(model, token):
    await Route.objects.acreate(cache_ttl_seconds=60)
    model.script(Reply.text("one two three"))
    client = AsyncClient()
    texts = []
    for room in ("a", "b"):
        response = await client.post(
            f"/agents/chat-agent/{room}/chat?format=sse&token={token}", data={"text": "Count"}, content_type="application/json"
        )
        assert response["Content-Type"].startswith("text/event-stream")
        body = b"".join([piece async for piece in response.streaming_content]).decode()
        events = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        texts.append("".join(json.loads(e)["text"] for e in events[:-1]))
    assert texts == ["one two three", "one two three"] and model.request_count == 1


def test_skip_cache_goes_to_the_upstream_again(client, model, token):
    Route.objects.create(cache_ttl_seconds=60)
    model.script(Reply.text("First."), Reply.text("Fresh."))
    ask(client, token, "one")
    fresh = ask(client, token, "two", body={"gateway": {"skipCache": True}})
    assert text_of(fresh) == "Fresh." and model.request_count == 2
    assert not ModelCall.objects.filter(cache_hit=True).exists()


def test_cache_ttl_on_the_call_caches_when_the_route_does_not(client, model, token):
    model.script(Reply.text("Cached per call."))
    options = {"body": {"gateway": {"cacheTtl": 60}}}
    ask(client, token, "one", **options)
    again = ask(client, token, "two", **options)
    assert text_of(again) == "Cached per call." and model.request_count == 1


def test_without_caching_identical_requests_both_reach_the_upstream(client, model, token):
    model.script(Reply.text("One."), Reply.text("Two."))
    ask(client, token, "one")
    assert text_of(ask(client, token, "two")) == "Two." and model.request_count == 2


def test_different_messages_are_different_cache_entries(client, model, token):
    Route.objects.create(cache_ttl_seconds=60)
    model.script(Reply.text("A."), Reply.text("B."))
    ask(client, token, "one")
    other = client.post(
        f"/agents/chat-agent/two/chat?format=json&token={token}", data={"text": "Something else"}, content_type="application/json"
    ).json()
    assert text_of(other) == "B." and model.request_count == 2
