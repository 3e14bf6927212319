"""Gateway routing: ordered fallbacks, which provider served, the call log with tokens and
cost, and API keys that never reach a user or a log row."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from agents_app.gateway import scope
from agents_app.gateway.text import generate_text
from agents_app.gateway.models import ModelCall, ModelPrice, Provider, RateLimit, Route, RouteEntry
from agents_app.providers.errors import ModelError
from agents_app.storage import query_count
from agents_app.storage.models import Session
from agents_app.turns.instances import resolve_session
from agents_app.testing.fake_openai import FakeOpenAI, Reply, ToolCallSpec
from tests.conftest import is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


@pytest.fixture
def backup() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def provider(name: str, fake: FakeOpenAI, **fields: Any) -> Provider:
    return Provider.objects.create(name=name, base_url=fake.base_url, api_key=f"sk-{name}-key", **fields)


def route(*entries: tuple[Provider, str], agent: str = "", **fields: Any) -> Route:
    created = Route.objects.create(agent=agent, **fields)
    for position, (upstream, model) in enumerate(entries):
        RouteEntry.objects.create(route=created, position=position, provider=upstream, model=model)
    return created


def ask(client: Any, token: str, text: str = "Hi", room: str = "room", **extra: Any) -> dict[str, Any]:
    response = client.post(
        f"/agents/chat-agent/{room}/chat?format=json&token={token}", data={"text": text, **extra}, content_type="application/json"
    )
    return response.json()


def answer_text(result: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in result["message"]["parts"] if p["type"] == "text")


def test_without_a_provider_calls_go_to_the_configured_model_and_are_logged(client, model, token, user):
    model.script(Reply.text("As before."))
    result = ask(client, token)
    assert answer_text(result) == "As before." and model.request_count == 1
    call = ModelCall.objects.get()
    assert (call.provider, call.model, call.status, call.agent, call.user_id) == ("default", "fake-model", "ok", "chat-agent", user.pk)
    assert call.request_id == result["requestId"] and call.fallbacks == []


def test_a_turn_that_fails_while_storing_its_answer_still_logs_its_model_call(client, model, token, settings):
    """A turn's log lines are written with its ending; when that write fails, the failure
    path writes them before the error outcome goes out."""
    settings.AGENTS_FAULT_INJECTION = "reply_write"
    model.script(Reply.text("Sunny."))
    result = ask(client, token)
    assert result["status"] == "error"
    call = ModelCall.objects.get()
    assert (call.status, call.request_id) == ("ok", result["requestId"])


def test_a_500_from_the_first_provider_falls_back_to_the_next(client, model, backup, token):
    route((provider("primary", model), "model-a"), (provider("backup", backup), "model-b"))
    model.script(Reply.error(500, "primary is down"))
    backup.script(Reply.text("Served by the backup."))
    assert answer_text(ask(client, token)) == "Served by the backup."
    assert model.requests[0]["model"] == "model-a" and backup.requests[0]["model"] == "model-b"
    call = ModelCall.objects.get()
    assert (call.provider, call.model, call.status) == ("backup", "model-b", "ok")
    assert [(f["provider"], f["model"]) for f in call.fallbacks] == [("primary", "model-a")]
    assert "HTTP 500" in call.fallbacks[0]["error"]


def test_a_timeout_and_a_429_fall_back_too(client, model, backup, token):
    slow = provider("slow", model, timeout_seconds=0.5)
    limited = FakeOpenAI().start()
    try:
        route((slow, "m"), (provider("limited", limited), "m"), (provider("backup", backup), "m"))
        model.script(Reply.text("too late", first_token_delay=3))
        limited.script(Reply.error(429, "slow down", retry_after=5))
        backup.script(Reply.text("Third time lucky."))
        assert answer_text(ask(client, token)) == "Third time lucky."
    finally:
        limited.stop()
    call = ModelCall.objects.get()
    assert call.provider == "backup"
    assert [f["provider"] for f in call.fallbacks] == ["slow", "limited"]
    assert "did not answer in time" in call.fallbacks[0]["error"] and "HTTP 429" in call.fallbacks[1]["error"]


def test_no_fallback_once_tokens_have_reached_the_client(client, model, backup, token):
    route((provider("primary", model), "m"), (provider("backup", backup), "m"))
    model.script(Reply.broken("half an answer then nothing", after=2))
    result = ask(client, token)
    assert result["status"] == "error" and "broke off mid-answer" in result["error"]
    assert backup.request_count == 0
    call = ModelCall.objects.get()
    assert (call.provider, call.status) == ("primary", "error") and call.ttft_ms is not None


def test_a_client_error_is_not_retried_elsewhere(client, model, backup, token):
    route((provider("primary", model), "m"), (provider("backup", backup), "m"))
    model.script(Reply.error(400, "bad request"))
    assert ask(client, token)["status"] == "error"
    assert backup.request_count == 0


def test_an_agent_route_wins_over_the_global_route(client, model, backup, token):
    route((provider("global", model), "global-model"))
    route((provider("special", backup), "special-model"), agent="chat-agent")
    backup.script(Reply.text("Special route."))
    assert answer_text(ask(client, token)) == "Special route."
    assert model.request_count == 0 and ModelCall.objects.get().provider == "special"


def test_the_log_row_has_the_tokens_latency_and_cost_of_the_call(client, model, token):
    ModelPrice.objects.create(model="fake-model", input_per_million=Decimal("1.50"), output_per_million=Decimal("6.00"))
    reply = Reply.text("Priced answer.", delay=0.05)
    reply.usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    model.script(reply)
    ask(client, token)
    call = ModelCall.objects.get()
    assert (call.input_tokens, call.output_tokens, call.total_tokens) == (100, 20, 120)
    assert call.cost == Decimal("0.00027")  # 100 × 1.50 / 1M + 20 × 6.00 / 1M
    assert call.ttft_ms is not None and call.latency_ms >= call.ttft_ms and call.latency_ms >= 50
    assert not call.cache_hit and call.error == ""


def test_a_provider_key_never_reaches_the_user_or_the_log(client, model, token):
    secret = "sk-live-very-secret-0042"
    route((Provider.objects.create(name="primary", base_url=model.base_url, api_key=secret), "m"))
    model.script(Reply.error(401, f"Incorrect API key provided: {secret}."))
    result = ask(client, token)
    assert result["status"] == "error" and "[redacted]" in result["error"] and secret not in result["error"]
    call = ModelCall.objects.get()
    assert secret not in call.error and "[redacted]" in call.error
    assert model.authorized == [True]  # the key did go upstream, where it belongs


def test_disabled_providers_are_skipped(client, model, backup, token):
    route((provider("off", model, enabled=False), "m"), (provider("on", backup), "m"))
    backup.script(Reply.text("Enabled one."))
    assert answer_text(ask(client, token)) == "Enabled one." and model.request_count == 0


async def test_a_steps_call_is_in_the_log_while_the_turns_next_step_streams(open_socket, model, token):
    """A turn holds its calls' log lines for its ending, but its next model call (after the
    tool) writes those before it: a long agent turn shows in the log as it goes."""
    model.script(
        Reply.tool_calls([ToolCallSpec("getWeather", '{"city": "Paris"}')]),
        Reply.text("It is snowy in Paris today.", delay=0.3),
    )
    socket = await open_socket("/agents/chat-agent/steps-room", token=token, wait_ready=True)
    await socket.chat("steps01", [user_message("Weather in Paris?")])
    await socket.until(lambda f: f.get("body", "").startswith('{"type":"text-delta"'))
    deadline = asyncio.get_running_loop().time() + 2
    while not await ModelCall.objects.filter(request_id="steps01").aexists():
        assert asyncio.get_running_loop().time() < deadline, "the first step's call was not logged while the turn went on"
        await asyncio.sleep(0.02)
    assert await ModelCall.objects.filter(request_id="steps01").acount() == 1  # the second is still streaming
    await socket.until(is_done("steps01"))
    assert await ModelCall.objects.filter(request_id="steps01", status="ok").acount() == 2


async def test_a_cancelled_turn_closes_the_upstream_and_logs_an_aborted_call(open_socket, model, token):
    model.script(Reply.text("one two three four five six seven eight", chunk_size=4, delay=0.2))
    socket = await open_socket("/agents/chat-agent/cancel-room", token=token, wait_ready=True)
    await socket.chat("cancel01", [user_message("Count slowly")])
    await socket.until(lambda f: f.get("body", "").startswith('{"type":"text-delta"'))
    await socket.send({"type": "cf_agent_chat_request_cancel", "id": "cancel01"})
    await socket.until(is_done("cancel01"))
    assert await sync_to_async(model.wait_for_disconnect)(5)
    call = await ModelCall.objects.aget(request_id="cancel01")
    assert call.status == "aborted" and call.ttft_ms is not None


async def test_a_call_naming_a_gateway_id_goes_through_that_route(model, backup):
    fast = await sync_to_async(provider)("fast", backup)
    await sync_to_async(route)((fast, "small-model"), name="fast")
    backup.script(Reply.text("Fast answer."))
    result = await generate_text("Hi", gateway={"id": "fast"})
    assert result.text == "Fast answer." and backup.requests[0]["model"] == "small-model" and model.request_count == 0
    call = await ModelCall.objects.aget()
    assert (call.provider, call.model) == ("fast", "small-model")


def test_a_named_route_serves_no_call_that_does_not_name_it(client, model, backup, token):
    route((provider("fast", backup), "small-model"), name="fast")
    model.script(Reply.text("Default route."))
    assert answer_text(ask(client, token)) == "Default route." and backup.request_count == 0


async def test_an_unknown_gateway_id_fails_the_call_with_a_clear_error(model):
    with pytest.raises(ModelError, match="Unknown gateway id 'nope': no enabled gateway route has that name"):
        await generate_text("Hi", gateway={"id": "nope"})
    assert model.request_count == 0
    call = await ModelCall.objects.aget()
    assert call.status == "error" and "Unknown gateway id" in call.error


def test_a_route_edited_through_the_orm_serves_the_next_call(client, model, backup, token):
    entry = route((provider("primary", model), "model-a")).entries.get()
    model.script(Reply.text("From the primary."))
    backup.script(Reply.text("From the backup."))
    assert answer_text(ask(client, token)) == "From the primary."
    entry.provider, entry.model = provider("backup", backup), "model-b"
    entry.save()
    assert answer_text(ask(client, token)) == "From the backup."
    assert backup.requests[0]["model"] == "model-b" and model.request_count == 1


def test_a_route_changed_behind_the_orms_back_serves_calls_once_the_copy_expires(client, model, backup, token, settings):
    settings.AGENTS_GATEWAY_CONFIG_TTL_SECONDS = 0.1
    routed, standby = route((provider("primary", model), "model-a")), provider("backup", backup)
    model.script(Reply.text("From the primary."))
    backup.script(Reply.text("From the backup."))
    assert answer_text(ask(client, token)) == "From the primary."
    # As another process's edit or plain SQL would: no signal reaches this process.
    RouteEntry.objects.filter(route=routed).update(provider=standby)
    time.sleep(0.15)
    assert answer_text(ask(client, token)) == "From the backup." and model.request_count == 1


async def test_a_model_call_in_a_turn_on_a_warm_cache_writes_its_log_row_and_reads_nothing(model, backup, token, other_user, settings):
    settings.AGENTS_COUNT_QUERIES = "1"
    await sync_to_async(route)((await sync_to_async(provider)("primary", backup), "routed-model"))
    await ModelPrice.objects.acreate(model="routed-model", input_per_million=Decimal("1"), output_per_million=Decimal("1"))
    await RateLimit.objects.acreate(user=other_user, requests_per_minute=10)  # someone else's: not enforced here
    backup.script(Reply.text("Warming up."), Reply.text("Counted."))
    await AsyncClient().post(f"/agents/chat-agent/warm/chat?format=json&token={token}", data={"text": "Hi"}, content_type="application/json")
    session = await Session.objects.select_related("agent").aget(name="warm")  # as the runner loads it with its agent
    with query_count.turn("counted"):
        with scope.turn_scope(session.pk, "counted", None, await sync_to_async(scope.caller_of)(session)):
            result = await generate_text("Hi")
    counted = next(turn for turn in query_count.finished if turn.request_id == "counted")
    assert result.text == "Counted." and backup.requests[-1]["model"] == "routed-model"
    assert counted.before_first_token + counted.after_first_token == 1  # the call log row
    logged = await ModelCall.objects.aget(request_id="counted")
    assert (logged.provider, logged.user_id) == ("primary", session.owner_id) and logged.cost > 0


def test_calls_of_a_session_whose_agent_an_operator_renamed_go_by_the_new_name(user: Any) -> None:
    session = resolve_session("scripted-agent", "renamed", user)
    assert scope.load_caller(session.pk).agent == "scripted-agent"
    session.agent.slug = "renamed-agent"
    session.agent.save()
    assert scope.load_caller(session.pk).agent == "renamed-agent"
