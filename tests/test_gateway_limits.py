"""Rate limits and budgets: enforced before the upstream call, as HTTP 429 with Retry-After
or an error frame, and the remaining budget visible to the user."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import AsyncClient
from django.utils import timezone

from agents_app.gateway.models import Budget, ModelCall, RateLimit
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.conftest import is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


def chat(client: Any, token: str, room: str = "room") -> Any:
    return client.post(f"/agents/chat-agent/{room}/chat?format=json&token={token}", data={"text": "Hi"}, content_type="application/json")


def used(user: Any, tokens: int, *, agent: str = "chat-agent", cost: str = "0", ago: timedelta = timedelta(0)) -> ModelCall:
    return ModelCall.objects.create(
        user=user, agent=agent, provider="default", model="fake-model", input_tokens=tokens, output_tokens=0,
        cost=Decimal(cost), created_at=timezone.now() - ago,
    )


def test_requests_per_minute_per_user_answers_429_with_retry_after(client, model, token):
    RateLimit.objects.create(requests_per_minute=1)
    model.script(Reply.text("Allowed."))
    assert chat(client, token).status_code == 200
    refused = chat(client, token)
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "1 requests per minute" in refused.json()["error"] and model.request_count == 1


def test_a_limit_added_between_two_turns_refuses_the_next_one(client, model, token):
    model.script(Reply.text("Before the limit."))
    assert chat(client, token).status_code == 200
    RateLimit.objects.create(requests_per_minute=1)
    assert chat(client, token).status_code == 429 and model.request_count == 1


def test_a_user_limit_does_not_touch_other_users(client, model, token, user, other_user):
    from agents_app.storage.models import ApiToken

    RateLimit.objects.create(user=user, requests_per_minute=1)
    used(user, 1)
    assert chat(client, token).status_code == 429
    assert chat(client, ApiToken.issue(other_user)[1]).status_code == 200


def test_tokens_per_day_per_agent(client, model, token, user, other_user):
    RateLimit.objects.create(agent="chat-agent", tokens_per_day=500)
    used(other_user, 500)  # an agent limit counts every user's calls to that agent
    used(user, 10_000, ago=timedelta(days=2))  # older than today: not counted
    refused = chat(client, token)
    assert refused.status_code == 429 and "500 tokens per day" in refused.json()["error"]
    assert model.request_count == 0


async def test_a_websocket_turn_over_the_limit_gets_an_error_frame(open_socket, model, token, user):
    await RateLimit.objects.acreate(requests_per_minute=1)
    await ModelCall.objects.acreate(user=user, agent="chat-agent", provider="default", model="fake-model")
    socket = await open_socket("/agents/chat-agent/ws-room", token=token, wait_ready=True)
    await socket.chat("limit001", [user_message("Hi")])
    frames = await socket.until(is_done("limit001"))
    errors = [f for f in frames if f.get("error")]
    assert errors and "Rate limit reached" in errors[0]["body"]
    assert model.request_count == 0
    refused = await ModelCall.objects.filter(status="refused").aget()
    assert refused.request_id == "limit001" and refused.user_id == user.pk


def test_a_used_up_token_budget_refuses_and_shows_zero_remaining(client, model, token, user):
    Budget.objects.create(user=user, monthly_tokens=1000)
    used(user, 600)
    status = client.get("/v1/budget", headers={"Authorization": f"Bearer {token}"}).json()
    assert status["tokens"] == {"used": 600, "budget": 1000, "remaining": 400}
    used(user, 400)
    assert client.get("/v1/budget", headers={"Authorization": f"Bearer {token}"}).json()["tokens"]["remaining"] == 0
    refused = chat(client, token)
    assert refused.status_code == 429 and refused.json()["code"] == "budget_exceeded" and model.request_count == 0


def test_a_cost_budget_applies_to_every_user_by_default(client, model, token, user):
    Budget.objects.create(monthly_cost=Decimal("0.50"))
    used(user, 10, cost="0.50")
    status = client.get("/v1/budget", headers={"Authorization": f"Bearer {token}"}).json()
    assert Decimal(status["cost"]["budget"]) == Decimal("0.50") and Decimal(status["cost"]["remaining"]) == 0
    assert chat(client, token).status_code == 429


def test_last_months_use_does_not_count_against_this_month(client, model, token, user):
    Budget.objects.create(user=user, monthly_tokens=100)
    used(user, 5000, ago=timedelta(days=40))
    model.script(Reply.text("Fine."))
    assert chat(client, token).status_code == 200


async def test_the_openai_endpoint_answers_429_in_the_openai_error_shape(model, token):
    await RateLimit.objects.acreate(requests_per_minute=0)
    response = await AsyncClient().post(
        "/v1/chat/completions", data={"model": "chat-agent", "messages": [{"role": "user", "content": "Hi"}]},
        content_type="application/json", headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(response["Retry-After"]) >= 1



def test_a_turns_later_model_call_counts_its_earlier_ones(client, model, token):
    """A turn writes its calls' log lines with its ending, but a call checked against a
    limit writes those of the turn's earlier calls first: here the first call used up the
    day's tokens, so the call after the tool is refused."""
    RateLimit.objects.create(tokens_per_day=100)
    first = Reply.tool_calls([ToolCallSpec("getWeather", '{"city": "Paris"}')])
    first.usage = {"prompt_tokens": 150, "completion_tokens": 10, "total_tokens": 160}
    model.script(first, Reply.text("Sunny."))
    answered = chat(client, token).json()
    assert answered["status"] == "error" and "Daily token limit reached" in answered["error"]
    assert model.request_count == 1
    assert list(ModelCall.objects.order_by("id").values_list("status", flat=True)) == ["ok", "refused"]
