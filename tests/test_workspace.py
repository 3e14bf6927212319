"""The per-session virtual filesystem and its seven tools (think.md §7), used by the model
through the agentic loop and called directly for the edge cases."""
from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents_app.turns.instances import load_agent, resolve_session
from agents_app.agents.tools import ToolInputError
from agents_app.storage.workspace import Workspace
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.conftest import user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
WORKSPACE_TOOLS = ["read", "write", "edit", "list", "find", "grep", "delete"]


async def agent_for(user, name="files", segment="stepped-agent"):
    session = await sync_to_async(resolve_session)(segment, name, user)
    return await sync_to_async(load_agent)(session)


async def call(agent, tool_name: str, **arguments: Any) -> Any:
    return await agent.turn_tools()[tool_name].run(arguments)


def outputs(message: dict[str, Any]) -> dict[str, Any]:
    return {p["toolCallId"]: p.get("output", p.get("errorText")) for p in message["parts"] if p.get("toolCallId")}


async def test_the_model_writes_edits_and_reads_a_file_over_several_steps(model, user):
    model.script(
        Reply.tool_calls([ToolCallSpec("write", json.dumps({"path": "notes/todo.md", "content": "buy milk\nwalk dog\n"}), id="w")]),
        Reply.tool_calls([ToolCallSpec("edit", json.dumps({"path": "/notes/todo.md", "old_string": "walk dog", "new_string": "walk cat"}), id="e")]),
        Reply.tool_calls([ToolCallSpec("read", '{"path": "/notes/todo.md"}', id="r")]),
        Reply.text("Your list has two items."),
    )
    agent = await agent_for(user)
    result = await agent.save_messages([user_message("Keep a todo list", "u1")])
    assert outputs(result.message) == {
        "w": {"path": "/notes/todo.md", "bytesWritten": 18, "lines": 2},
        "e": {"path": "/notes/todo.md", "replaced": True, "lines": 2},
        "r": {"path": "/notes/todo.md", "content": "1\tbuy milk\n2\twalk cat", "totalLines": 2},
    }
    assert json.loads(model.requests[3]["messages"][-1]["content"])["content"] == "1\tbuy milk\n2\twalk cat"
    assert await sync_to_async(agent.workspace.read_text)("/notes/todo.md") == "buy milk\nwalk cat\n"
    assert await call(agent, "list", path="/") == {"path": "/", "count": 1, "entries": ["notes/"]}


async def test_every_think_turn_offers_the_workspace_tools_and_a_user_tool_of_the_same_name_wins(model, user):
    model.script(Reply.tool_calls([ToolCallSpec("read", '{"page": 3}', id="p")]), Reply.text("Read it."))
    agent = await agent_for(user, segment="book-agent")
    result = await agent.save_messages([user_message("Read page 3", "u1")])
    offered = {t["function"]["name"]: t["function"] for t in model.requests[0]["tools"]}
    assert sorted(offered) == sorted(WORKSPACE_TOOLS)
    assert offered["read"]["parameters"]["properties"] == {"page": {"title": "Page", "type": "integer"}}
    assert outputs(result.message) == {"p": "page 3"}


async def test_edit_reports_missing_and_ambiguous_text_and_falls_back_to_whitespace_insensitive_matching(user):
    agent = await agent_for(user)
    assert await call(agent, "edit", path="/a.py", old_string="", new_string="x = 1\nx = 1\ny  =\t2\n") == {"path": "/a.py", "created": True, "lines": 3}
    assert await call(agent, "edit", path="/a.py", old_string="", new_string="again") == {"error": "/a.py already exists; give old_string to edit it"}
    assert await call(agent, "edit", path="/a.py", old_string="z = 3", new_string="") == {
        "error": "old_string was not found in /a.py; read the file and copy the text exactly"
    }
    assert await call(agent, "edit", path="/a.py", old_string="x = 1", new_string="x = 2") == {
        "error": "old_string occurs 2 times in /a.py; include more surrounding text so that it matches exactly once"
    }
    assert await call(agent, "edit", path="/a.py", old_string="y = 2", new_string="y = 3") == {"path": "/a.py", "replaced": True, "lines": 3, "fuzzyMatch": True}
    assert await sync_to_async(agent.workspace.read_text)("/a.py") == "x = 1\nx = 1\ny = 3\n"
    assert await call(agent, "edit", path="/nope.txt", old_string="a", new_string="b") == {"error": "File not found: /nope.txt"}


async def test_read_with_offset_and_limit_numbers_the_lines_it_shows(user):
    agent = await agent_for(user)
    await call(agent, "write", path="/log.txt", content="\n".join(f"line {n}" for n in range(1, 11)))
    assert await call(agent, "read", path="/log.txt", offset=4, limit=2) == {
        "path": "/log.txt", "content": "4\tline 4\n5\tline 5", "totalLines": 10, "fromLine": 4, "toLine": 5
    }
    assert await call(agent, "read", path="/") == {"error": "/ is a directory, not a file"}
    with pytest.raises(ToolInputError, match="offset: Input should be greater than or equal to 1"):
        await call(agent, "read", path="/log.txt", offset=0)


async def test_list_find_and_grep_describe_the_tree(user):
    agent = await agent_for(user)
    await call(agent, "write", path="/src/app.py", content="import os\nTODO: fix\nprint('ok')\n")
    await call(agent, "write", path="/src/lib/util.py", content="def todo():\n    pass\n")
    await call(agent, "write", path="/README.md", content="# Todo app\n")
    assert await call(agent, "list", path="/src") == {"path": "/src", "count": 2, "entries": ["app.py (32 B)", "lib/"]}
    assert await call(agent, "find", pattern="**/*.py") == {"pattern": "**/*.py", "count": 2, "files": ["/src/app.py", "/src/lib/util.py"]}
    assert await call(agent, "find", pattern="src/*") == {"pattern": "src/*", "count": 2, "files": ["/src/app.py", "/src/lib/"]}
    found = await call(agent, "grep", query="todo", include="**/*.py")
    assert found == {
        "query": "todo", "filesSearched": 2, "filesWithMatches": 2, "totalMatches": 2,
        "matches": ["/src/app.py:2: TODO: fix", "/src/lib/util.py:1: def todo():"],
    }
    exact = await call(agent, "grep", query="TODO:", fixedString=True, caseSensitive=True, contextLines=1)
    assert exact["matches"] == [{"file": "/src/app.py", "line": 2, "context": ["  1\timport os", "> 2\tTODO: fix", "  3\tprint('ok')"]}]
    assert (await call(agent, "grep", query="("))["error"].startswith("Invalid regex:")


async def test_delete_needs_recursive_for_a_directory_with_contents_and_ignores_missing_paths(user):
    agent = await agent_for(user)
    await call(agent, "write", path="/tmp/a/b.txt", content="b")
    assert (await call(agent, "delete", path="/tmp"))["error"].startswith("/tmp is a directory that is not empty")
    assert await call(agent, "delete", path="/tmp", recursive=True) == {"deleted": "/tmp"}
    assert await call(agent, "delete", path="/never") == {"deleted": "/never"}
    assert await call(agent, "find", pattern="**") == {"pattern": "**", "count": 0, "files": []}


async def test_size_limits_are_reported_to_the_model_and_the_turn_goes_on(model, user, monkeypatch):
    monkeypatch.setattr(Workspace, "max_file_bytes", 10)
    model.script(
        Reply.tool_calls([ToolCallSpec("write", json.dumps({"path": "/big.txt", "content": "x" * 11}), id="big")]),
        Reply.text("That file is too large."),
    )
    agent = await agent_for(user)
    result = await agent.save_messages([user_message("Write a big file", "u1")])
    assert outputs(result.message) == {"big": {"error": "/big.txt would be 11 bytes; files are limited to 10 bytes"}}
    assert result.status == "completed"


async def test_each_session_has_its_own_workspace(user):
    first, second = await agent_for(user, "one"), await agent_for(user, "two")
    await call(first, "write", path="/secret.txt", content="mine")
    assert await call(second, "read", path="/secret.txt") == {"error": "File not found: /secret.txt"}
    assert (await call(first, "read", path="/secret.txt"))["content"] == "1\tmine"
