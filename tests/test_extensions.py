"""Extensions: JavaScript tool bundles in the sandbox, declared by the developer or loaded by
the model, namespaced, with declared context blocks and an enforced network permission."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents_app.turns.instances import load_agent, resolve_session
from agents_app.sandbox.models import SessionExtension
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.conftest import user_message
from tests.http_pages import serve_page

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _sandbox_agents() -> None:
    import tests.sandbox_agents  # noqa: F401 - registers the agents


@pytest.fixture
def news_page() -> Iterator[str]:
    with serve_page(b"<html><h1>Local news</h1></html>") as base_url:
        yield base_url


async def agent_for(user: Any, name: str = "ext") -> Any:
    session = await sync_to_async(resolve_session)("extension-agent", name, user)
    return await sync_to_async(load_agent)(session)


def outputs(message: dict[str, Any]) -> dict[str, Any]:
    return {p["toolCallId"]: p.get("output", p.get("errorText")) for p in message["parts"] if p.get("toolCallId")}


async def test_declared_extension_tools_are_namespaced_and_run_in_the_sandbox(model, user):
    model.script(Reply.tool_calls([ToolCallSpec("math_add", '{"a": 2, "b": 40}', id="add")]), Reply.text("42."))
    result = await (await agent_for(user)).save_messages([user_message("2+40?", "u1")])
    assert outputs(result.message) == {"add": 42}
    offered = {t["function"]["name"]: t["function"] for t in model.requests[0]["tools"]}
    assert offered["math_add"]["description"] == "Add two numbers"
    assert offered["math_add"]["parameters"]["required"] == ["a", "b"]
    assert {"math_peek", "news_headline", "load_extension", "list_extensions"} <= set(offered)


async def test_a_declared_context_block_is_registered_as_extension_label(model, user):
    agent = await agent_for(user)
    blocks = {b["label"]: b for b in await agent.get_context_blocks()}
    assert blocks["math_notes"]["description"] == "Math notes" and blocks["math_notes"]["writable"]
    model.script(Reply.text("Noted."))
    await agent.save_messages([user_message("Hi", "u1")])
    assert "MATH_NOTES (Math notes) [writable]" in model.requests[0]["messages"][0]["content"]


async def test_the_network_is_closed_without_the_permission_and_limited_to_the_granted_hosts(model, user, news_page):
    model.script(
        Reply.tool_calls([
            ToolCallSpec("math_peek", "{}", id="peek"),
            ToolCallSpec("news_headline", json.dumps({"url": news_page}), id="news"),
            ToolCallSpec("news_headline", json.dumps({"url": news_page.replace("127.0.0.1", "localhost")}), id="other"),
        ]),
        Reply.text("Done."),
    )
    result = await (await agent_for(user)).save_messages([user_message("Read", "u1")])
    found = outputs(result.message)
    assert found["peek"] == "undefined"
    assert found["news"] == "Local news"
    assert "localhost is not among the hosts this extension may reach" in found["other"]


async def test_the_model_loads_an_extension_that_is_offered_from_the_next_step_and_kept(model, user):
    source = "({ tools: { shout: { description: 'Upper-case a text', parameters: { type: 'object', properties: { text: { type: 'string' } } }, execute: async ({ text }) => text.toUpperCase() } } })"
    model.script(
        Reply.tool_calls([ToolCallSpec("load_extension", json.dumps({"name": "loud", "source": source}), id="load")]),
        Reply.tool_calls([ToolCallSpec("loud_shout", '{"text": "hi"}', id="shout")]),
        Reply.text("HI."),
    )
    result = await (await agent_for(user)).save_messages([user_message("Make a shouting tool", "u1")])
    found = outputs(result.message)
    assert found["load"] == {"loaded": "loud", "tools": ["loud_shout"], "note": "The tools are available from your next step."}
    assert found["shout"] == "HI"
    assert "loud_shout" not in {t["function"]["name"] for t in model.requests[0]["tools"]}
    assert "loud_shout" in {t["function"]["name"] for t in model.requests[1]["tools"]}

    model.script(Reply.tool_calls([ToolCallSpec("list_extensions", "{}", id="list")]), Reply.text("Three."))
    later = await (await agent_for(user)).save_messages([user_message("Which extensions?", "u2")])
    listed = {e["name"]: e for e in outputs(later.message)["list"]}
    assert set(listed) == {"math", "news", "loud"}
    assert listed["loud"]["permissions"] == {"network": False} and listed["loud"]["tools"] == ["shout"]
    assert "loud_shout" in {t["function"]["name"] for t in model.requests[-1]["tools"]}
    assert await sync_to_async(SessionExtension.objects.filter(name="loud").count)() == 1


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"name": "Bad Name", "source": "({tools:{}})"}, "An extension name is 1-31 lowercase letters"),
        ({"name": "math", "source": "({tools:{x:{execute:async()=>1}}})"}, "math is built in and cannot be replaced"),
        ({"name": "empty", "source": "({})"}, "Extension empty defines no tools"),
        ({"name": "broken", "source": "({tools: {"}, "Extension broken failed: SyntaxError"),
        ({"name": "spin", "source": "(() => { while (true) {} })()"}, "Time limit"),
    ],
)
async def test_bad_extensions_are_refused_with_a_reason(model, user, arguments, error):
    model.script(Reply.tool_calls([ToolCallSpec("load_extension", json.dumps(arguments), id="bad")]), Reply.text("Sorry."))
    result = await (await agent_for(user)).save_messages([user_message("Load it", "u1")])
    found = outputs(result.message)["bad"]
    assert error in (found["error"] if isinstance(found, dict) else found)
    assert result.message["parts"][-1]["text"] == "Sorry."
