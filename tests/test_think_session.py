"""Think sessions (think.md §6, §8): context blocks, compaction overlays, full-text search,
per-instance config and stability, on SQLite and PostgreSQL."""
from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from agents_app.think.context_blocks import ContextBlockError, undo_last_write
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.storage import client_messages, transcript
from agents_app.storage.models import ContextBlock, Message, Session
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.conftest import user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


@pytest.fixture(autouse=True)
def _think_agents() -> None:
    import tests.think_agents  # noqa: F401 - registers the agents


async def agent_for(user, segment, name="think"):
    session = await sync_to_async(resolve_session)(segment, name, user)
    return await sync_to_async(load_agent)(session)


def said(index: int, text: str, role: str = "user") -> dict:
    return {"id": f"m{index}", "role": role, "parts": [{"type": "text", "text": text}]}


# -- context blocks -----------------------------------------------------------------------------
async def test_the_system_prompt_is_assembled_from_the_blocks_and_set_context_changes_the_next_turn(user, model):
    model.script(
        Reply.tool_calls([ToolCallSpec("set_context", json.dumps({"label": "memory", "content": "Name: Bob"}), id="c1")]),
        Reply.text("Noted."),
        Reply.text("Hello Bob."),
    )
    agent = await agent_for(user, "memory-agent")
    await agent.save_messages([user_message("My name is Bob", "u1")])
    await agent.save_messages([user_message("Who am I?", "u2")])
    first_system, last_system = model.requests[0]["messages"][0]["content"], model.requests[2]["messages"][0]["content"]
    assert first_system.startswith("You are a test agent.\n\n" + "═" * 46 + "\nSOUL [readonly]\n")
    assert "You are Ada, talking in session think." in first_system
    assert "MEMORY (Facts about the user) [0% (0/30 tokens)] [writable]" in first_system
    assert "Name: Bob" not in first_system and "Name: Bob" in last_system
    assert model.requests[1]["messages"][-1]["content"] == "Written to memory. Usage: 10% (3/30 tokens)"
    context_tools = ("set_context", "load_context", "search_context")
    offered = {t["function"]["name"]: t["function"]["parameters"]["properties"]["label"] for t in model.requests[0]["tools"] if t["function"]["name"] in context_tools}
    labels = {name: schema.get("enum") or [schema["const"]] for name, schema in offered.items()}
    assert labels == {"set_context": ["memory"], "load_context": ["recipes"], "search_context": ["history", "notes"]}


async def test_a_write_over_max_tokens_is_refused_and_the_model_is_told_why(user, model):
    too_long = "word " * 40
    model.script(
        Reply.tool_calls([ToolCallSpec("set_context", json.dumps({"label": "memory", "content": too_long}), id="c1")]),
        Reply.text("I could not store that."),
    )
    agent = await agent_for(user, "memory-agent")
    await agent.save_messages([user_message("Remember all of this", "u1")])
    assert model.requests[1]["messages"][-1]["content"] == 'Error: Block "memory" exceeds maxTokens: 52 > 30'
    assert (await agent.context.get("memory")).content == ""


async def test_computed_and_unknown_blocks_cannot_be_written(user):
    agent = await agent_for(user, "memory-agent")
    with pytest.raises(ContextBlockError, match='Block "soul" is read-only'):
        await agent.context.replace("soul", "Someone else")
    with pytest.raises(ContextBlockError, match='Unknown context block "mood"'):
        await agent.context.replace("mood", "happy")


async def test_every_write_keeps_the_previous_version_and_undo_restores_it(user):
    agent = await agent_for(user, "memory-agent")
    await agent.context.replace("memory", "Likes tea")
    await agent.context.append("memory", "Lives in Oslo")
    assert (await agent.context.get("memory")).content == "Likes tea\nLives in Oslo"
    block = await sync_to_async(ContextBlock.objects.get)(session=agent.session, label="memory")
    assert await sync_to_async(lambda: [v.content for v in block.versions.all()])() == ["Likes tea", ""]
    assert await sync_to_async(undo_last_write)(block) is True
    assert (await agent.context.get("memory")).content == "Likes tea"


async def test_load_context_returns_a_document_of_a_skills_block(user, model):
    agent = await agent_for(user, "memory-agent")
    await agent.context.add_entry("recipes", "pancakes", "Flour, milk, eggs.", title="Pancakes")
    model.script(
        Reply.tool_calls([ToolCallSpec("load_context", json.dumps({"label": "recipes", "key": "pancakes"}), id="c1"),
                          ToolCallSpec("load_context", json.dumps({"label": "recipes", "key": "waffles"}), id="c2")]),
        Reply.text("Here is the recipe."),
    )
    await agent.save_messages([user_message("How do I make pancakes?", "u1")])
    assert "- pancakes: Pancakes" in model.requests[0]["messages"][0]["content"]
    results = {m["tool_call_id"]: m["content"] for m in model.requests[1]["messages"] if m["role"] == "tool"}
    assert results == {"c1": "Flour, milk, eggs.", "c2": "Not found: waffles"}


async def test_search_context_finds_earlier_messages_and_searchable_notes(user, model):
    agent = await agent_for(user, "memory-agent")
    await agent.persist_messages([said(1, "The launch code is tangerine"), said(2, "Stored.", "assistant")])
    await agent.context.add_entry("notes", "trip", "Flight to Lisbon on Friday")
    model.script(
        Reply.tool_calls([ToolCallSpec("search_context", json.dumps({"label": "history", "query": "launch code"}), id="c1"),
                          ToolCallSpec("search_context", json.dumps({"label": "notes", "query": "lisbon"}), id="c2")]),
        Reply.text("Found them."),
    )
    await agent.save_messages([user_message("What was the code?", "u9")])
    results = {m["tool_call_id"]: m["content"] for m in model.requests[1]["messages"] if m["role"] == "tool"}
    assert results["c1"] == "[user m1]\nThe [launch] [code] is tangerine"
    assert results["c2"] == "[trip]\nFlight to Lisbon on Friday"


# -- compaction ---------------------------------------------------------------------------------
async def long_conversation(agent) -> None:
    await agent.persist_messages([said(i, f"Message {i}: " + "lorem ipsum dolor " * 12, "user" if i % 2 else "assistant") for i in range(1, 9)])


async def test_compaction_sends_the_summary_instead_of_older_messages_while_get_messages_keeps_them(user, model):
    agent = await agent_for(user, "compacting-agent")
    await long_conversation(agent)
    model.script(Reply.text("SUMMARY: eight messages of lorem ipsum."), Reply.text("Answer."))
    await agent.save_messages([user_message("And now?", "u9")])
    summary_request, answer_request = model.requests
    assert "Message 2:" in summary_request["messages"][-1]["content"]
    sent = [m["content"] for m in answer_request["messages"]]
    assert sent[1].startswith("Message 1:") and sent[2] == "SUMMARY: eight messages of lorem ipsum."
    assert sent[3].startswith("Message 8:") and sent[4] == "And now?"
    stored = await agent.get_messages()
    assert [m["id"] for m in stored] == [f"m{i}" for i in range(1, 9)] + ["u9", stored[-1]["id"]]
    marked = [m["id"] for m in stored if (m.get("metadata") or {}).get("compaction")]
    assert marked == [f"m{i}" for i in range(2, 8)]


async def test_compaction_by_hand_can_be_undone(user, model):
    agent = await agent_for(user, "compacting-agent")
    await long_conversation(agent)
    model.script(Reply.text("SUMMARY."))
    overlay = await agent.compact()
    assert overlay["summary"] == "SUMMARY." and overlay["tokensBefore"] > 120
    assert any((m.get("metadata") or {}).get("compaction") for m in await agent.get_messages())
    assert await agent.undo_compaction(overlay["id"]) is True
    assert not any((m.get("metadata") or {}).get("compaction") for m in await agent.get_messages())
    assert len(await agent.get_messages()) == 8


async def test_a_second_compaction_grows_the_first_overlay_instead_of_stacking(user, model):
    agent = await agent_for(user, "compacting-agent")
    await long_conversation(agent)
    model.script(Reply.text("FIRST."), Reply.text("SECOND."))
    await agent.compact()
    await agent.persist_messages([said(9, "more " * 20), said(10, "even more " * 10, "assistant")])
    await agent.compact()
    assert "ASSISTANT: FIRST." in model.requests[1]["messages"][-1]["content"]
    marked = [m["id"] for m in await agent.get_messages() if (m.get("metadata") or {}).get("compaction")]
    assert marked == [f"m{i}" for i in range(2, 9)]


async def test_a_failed_summary_leaves_the_turn_running_uncompacted(user, model):
    agent = await agent_for(user, "compacting-agent")
    await long_conversation(agent)
    model.script(Reply.error(500, "summariser down"), Reply.text("Answer anyway."))
    result = await agent.save_messages([user_message("Still there?", "u9")])
    assert result.status == "completed"
    assert len(model.requests[1]["messages"]) == 1 + 9


# -- search -------------------------------------------------------------------------------------
async def test_search_ranks_matching_messages_with_highlighted_snippets(user):
    agent = await agent_for(user, "memory-agent")
    await agent.persist_messages([said(1, "We were running late for the train"), said(2, "Trains run every hour", "assistant"), said(3, "Nothing here")])
    hits = await agent.search("run")
    assert {hit["id"] for hit in hits} == {"m1", "m2"}
    assert "[running]" in next(h["snippet"] for h in hits if h["id"] == "m1")
    assert await agent.search("run train") != [] and await agent.search("?!") == []


async def test_edited_and_deleted_messages_leave_the_index(user):
    agent = await agent_for(user, "memory-agent")
    await agent.persist_messages([said(1, "apricot jam")])
    await agent.persist_messages([said(1, "plum jam")])
    assert await agent.search("apricot") == [] and [h["id"] for h in await agent.search("plum")] == ["m1"]
    await agent.delete_branch("m1")
    assert await agent.search("plum") == []


def test_search_across_sessions_returns_only_the_users_own(client, user, other_user, token):
    mine = resolve_session("memory-agent", "one", user)
    theirs = resolve_session("memory-agent", "two", other_user)
    client_messages.upsert(mine, [said(1, "secret mango plan")], move_leaf=True)
    client_messages.upsert(theirs, [said(1, "another mango plan")], move_leaf=True)
    response = client.get("/agents/search", {"q": "mango", "token": token})
    assert response.status_code == 200
    assert [(h["agent"], h["name"], h["id"]) for h in response.json()] == [("memory-agent", "one", "m1")]
    assert client.get("/agents/search", {"q": "mango"}).status_code == 401
    per_session = client.get("/agents/memory-agent/one/search", {"q": "mango plan", "token": token}).json()
    assert [h["snippet"] for h in per_session] == ["secret [mango] [plan]"]


# -- branches over HTTP ---------------------------------------------------------------------------
def test_the_switch_branch_endpoint_moves_the_conversation_to_another_answer(client, user):
    session = resolve_session("memory-agent", "branches", user)
    question = Message.objects.create(session=session, uid="m1", role="user", parts=said(1, "question")["parts"])
    Message.objects.create(session=session, uid="m2", parent=question, role="assistant", parts=said(2, "first answer")["parts"])
    regenerated = Message.objects.create(session=session, uid="m3", parent=question, role="assistant", parts=said(3, "second")["parts"])
    Session.objects.filter(pk=session.pk).update(active_leaf=regenerated)
    client.force_login(user)
    url = "/agents/memory-agent/branches/switch-branch"
    response = client.post(url, json.dumps({"messageId": "m2"}), content_type="application/json")
    assert response.status_code == 200 and [m["id"] for m in response.json()] == ["m1", "m2"]
    assert [m["id"] for m in transcript.transcript(session)] == ["m1", "m2"]
    assert client.post(url, json.dumps({"messageId": "nope"}), content_type="application/json").status_code == 404
    assert client.post(url, "{}", content_type="application/json").status_code == 400


# -- config and stability -------------------------------------------------------------------------
async def test_configure_validates_with_the_config_model_and_persists(user):
    agent = await agent_for(user, "compacting-agent")
    assert await agent.get_config() is None
    assert await agent.configure({"home_city": "Oslo", "max_budget": 900}) == {"home_city": "Oslo", "max_budget": 900}
    assert await (await agent_for(user, "compacting-agent")).get_config() == {"home_city": "Oslo", "max_budget": 900}
    with pytest.raises(ValueError, match="Invalid config: max_budget: Input should be greater than 0"):
        await agent.configure({"home_city": "Oslo", "max_budget": -1})
    assert await agent.get_config() == {"home_city": "Oslo", "max_budget": 900}


async def test_config_errors_reach_an_rpc_client_as_an_error_result(open_socket, token, user):
    socket = await open_socket("/agents/compacting-agent/think", token=token, wait_ready=True)
    await socket.send({"type": "rpc", "id": "r1", "method": "configure", "args": [{"home_city": "Oslo", "surprise": 1}]})
    frame = await socket.until(lambda f: f["type"] == "rpc")
    assert frame[-1]["success"] is False and "Invalid config" in frame[-1]["error"] and "surprise" in frame[-1]["error"]


async def test_a_pending_approval_is_an_interaction_and_the_agent_is_stable_once_it_is_answered(user):
    agent = await agent_for(user, "memory-agent")
    asking = {"type": "tool-delete_file", "toolCallId": "t1", "state": "approval-requested", "input": {}, "approval": {"id": "a1"}}
    await agent.persist_messages([said(1, "delete it"), {"id": "a", "role": "assistant", "parts": [asking]}])
    assert await agent.has_pending_interaction() is True
    assert await agent.wait_until_stable(timeout=0.3) is False
    done = {**asking, "state": "output-available", "output": "deleted"}
    await agent.persist_messages([said(1, "delete it"), {"id": "a", "role": "assistant", "parts": [done]}])
    assert await agent.has_pending_interaction() is False
    assert await agent.wait_until_stable(timeout=1) is True


# -- admin ------------------------------------------------------------------------------------------
def test_the_admin_session_page_shows_the_tree_blocks_overlays_and_searches(admin_client, user):
    session = resolve_session("memory-agent", "admin-view", user)
    question = Message.objects.create(session=session, uid="m1", role="user", parts=said(1, "Where is the pineapple?")["parts"])
    Message.objects.create(session=session, uid="m2", parent=question, role="assistant", parts=said(2, "In the fridge")["parts"])
    newest = Message.objects.create(session=session, uid="m3", parent=question, role="assistant", parts=said(3, "On the shelf")["parts"])
    Session.objects.filter(pk=session.pk).update(active_leaf=newest)
    ContextBlock.objects.create(session=session, label="memory", content="Likes pineapple")
    page = admin_client.get(f"/admin/agents_app/session/{session.pk}/change/", {"q": "pineapple"}).content.decode()
    assert "Conversation tree" in page and "In the fridge" in page and "On the shelf" in page
    assert 'style="font-weight: bold"' in page and "Likes pineapple" in page
    assert "Where is the [pineapple]?" in page


def test_editing_a_block_in_the_admin_keeps_a_version_and_undo_restores_it(admin_client, user):
    session = resolve_session("memory-agent", "admin-edit", user)
    block = ContextBlock.objects.create(session=session, label="memory", content="Likes tea")
    response = admin_client.post(f"/admin/agents_app/contextblock/{block.pk}/change/", {
        "session": session.pk, "label": "memory", "content": "Likes coffee",
        "versions-TOTAL_FORMS": "0", "versions-INITIAL_FORMS": "0", "versions-MIN_NUM_FORMS": "0", "versions-MAX_NUM_FORMS": "1000",
    })
    assert response.status_code == 302
    block.refresh_from_db()
    assert block.content == "Likes coffee" and [v.content for v in block.versions.all()] == ["Likes tea"]
    admin_client.post("/admin/agents_app/contextblock/", {"action": "undo_last_write", "_selected_action": [block.pk]})
    block.refresh_from_db()
    assert block.content == "Likes tea"
