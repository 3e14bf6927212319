"""Server-side addressing: `get_agent_by_name` reaches an instance from server code (a view, a
task, another agent), and `fetch` sends it a request its `on_request` serves."""
from __future__ import annotations

import json

import pytest
from django.http import HttpRequest, HttpResponse, JsonResponse

from agents_app.agents import Agent, AIChatAgent, get_agent_by_name, register_agent, text_of
from agents_app.turns.instances import UnknownAgent
from agents_app.turns.registry import agent_class as registered_class
from tests.agents import ScriptedAgent
from tests.conftest import user_message

pytestmark = pytest.mark.django_db(transaction=True)


@register_agent
class QuarterlyReportAgent(Agent):
    async def on_request(self, request: HttpRequest, path: str) -> HttpResponse:
        return JsonResponse({
            "method": request.method,
            "path": path,
            "query": request.GET.get("since"),
            "body": json.loads(request.body) if request.body else None,
            "user": request.user.get_username(),
            "token": request.headers.get("X-Trace"),
            "instance": self.session.name,
        })


class NeverRegistered(AIChatAgent):
    pass


async def test_the_same_name_reaches_the_same_instance_of_the_same_owner(user):
    first = await get_agent_by_name(ScriptedAgent, "desk", owner=user)
    again = await get_agent_by_name(ScriptedAgent, "desk", owner=user)

    await first.save_messages([user_message("hello", "u1")], request_id="srv00001")

    assert again.session.pk == first.session.pk
    assert [text_of(m) for m in await again.get_messages()] == ["hello", "w0 w1 w2 w3 w4 "]


async def test_owners_have_separate_instances_of_one_name(user, other_user):
    alices = await get_agent_by_name(ScriptedAgent, "desk", owner=user)
    await alices.save_messages([user_message("only for alice", "u1")], request_id="srv00002")

    bobs = await get_agent_by_name(ScriptedAgent, "desk", owner=other_user)

    assert bobs.session.pk != alices.session.pk and await bobs.get_messages() == []


async def test_fetch_is_served_by_on_request_as_the_instance_owner(user):
    report = await get_agent_by_name(QuarterlyReportAgent, "q3", owner=user)

    response = await report.fetch("summary", method="POST", query={"since": "2026-07-01"}, json={"rows": 3}, headers={"X-Trace": "t-1"})

    assert response.status_code == 200
    assert json.loads(response.content) == {
        "method": "POST", "path": "summary", "query": "2026-07-01", "body": {"rows": 3},
        "user": "alice", "token": "t-1", "instance": "q3",
    }


async def test_an_unregistered_class_cannot_be_addressed(user):
    with pytest.raises(UnknownAgent):
        await get_agent_by_name(NeverRegistered, "x", owner=user)


def test_a_second_class_registered_under_a_taken_name_takes_the_url_over_with_a_warning(caplog):
    def billing_app() -> type[Agent]:
        class ClashingExampleAgent(Agent):
            pass

        return ClashingExampleAgent

    def support_app() -> type[Agent]:
        class ClashingExampleAgent(Agent):
            pass

        return ClashingExampleAgent

    first, second = billing_app(), support_app()
    register_agent(first)
    register_agent(first)  # the same class again (a module imported twice) is no clash
    assert "replaces" not in caplog.text

    register_agent(second)

    assert registered_class("clashing-example-agent") is second
    assert "replaces" in caplog.text and "/agents/clashing-example-agent/" in caplog.text
