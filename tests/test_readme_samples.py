"""README's Python samples stay true: each one compiles, its imports resolve, the complete ones
run, the agents they define answer a turn, and the fragments run against a real agent with
the names their prose gives them."""
from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents_app.agents import AIChatAgent, Agent, register_agent, text_of, user_text_message
from agents_app.testing.fake_openai import Reply
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.protocol.naming import agent_segment
from agents_app.turns.registry import agent_class as registered_class
from tests.conftest import user_message

README = Path(__file__).resolve().parent.parent / "README.md"
FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


def samples() -> list[tuple[int, str]]:
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m[1]) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def sample_id(sample: tuple[int, str]) -> str:
    return f"README.md:{sample[0]}"


def has_top_level_await(code: str) -> bool:
    return any(isinstance(node, ast.Await) for statement in ast.parse(code, mode="exec", type_comments=False).body
               if not isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
               for node in ast.walk(statement))


def parse(code: str) -> ast.Module:
    return compile(code, "<readme>", "exec", flags=FLAGS | ast.PyCF_ONLY_AST)


def run_module(line: int, code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"readme_sample_{line}"}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


ALL = samples()
MODULES = [s for s in ALL if not has_top_level_await(s[1]) and "OpenAI(" not in s[1]]
FRAGMENTS = [s for s in ALL if has_top_level_await(s[1])]


def test_the_readme_has_python_samples():
    assert len(ALL) >= 10 and MODULES and FRAGMENTS


@pytest.mark.parametrize("sample", ALL, ids=sample_id)
def test_every_sample_compiles(sample):
    parse(sample[1])


@pytest.mark.parametrize("sample", ALL, ids=sample_id)
def test_every_import_in_a_sample_resolves(sample):
    imports = [node for node in parse(sample[1]).body if isinstance(node, ast.Import | ast.ImportFrom)]
    exec(compile(ast.Module(body=imports, type_ignores=[]), sample_id(sample), "exec"), {})  # noqa: S102


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sample", MODULES, ids=sample_id)
async def test_each_complete_sample_runs_and_its_chat_agents_answer(sample, model, user):
    namespace = run_module(*sample)
    agents = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, AIChatAgent) and v.__module__ == namespace["__name__"]]
    for agent_class in agents:
        segment = agent_segment(agent_class.__name__)
        if registered_class(segment) is not agent_class:  # an unregistered example class (part of a bigger app)
            continue
        model.script(Reply.text(f"{agent_class.__name__} here."))
        session = await sync_to_async(resolve_session)(segment, "readme", user)
        agent = await sync_to_async(load_agent)(session)
        result = await agent.save_messages([user_message("Hello from the README test")])
        assert result.status == "completed", (agent_class.__name__, result.error)
        assert text_of(result.message) == f"{agent_class.__name__} here."


@register_agent
class ReadmeReminderAgent(AIChatAgent):
    """The `agent` of the scheduling fragment: it has the `remind` callback the fragment shows."""

    async def on_chat_message(self, options: Any) -> Any:
        return "Noted."

    async def remind(self, payload: Any) -> Any:
        return await self.save_messages([user_text_message(f"Remind me about {payload['what']}")])


@register_agent
class ReadmeTicketAgent(Agent):
    """Stands in for the fragment's SupportAgent (defined in another sample)."""

    async def save_messages(self, messages: Any) -> Any:
        return messages


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sample", FRAGMENTS, ids=sample_id)
async def test_each_fragment_runs_against_a_real_agent(sample, model, user, rf):
    model.responder = lambda request: Reply.text("Fine.")
    session = await sync_to_async(resolve_session)("readme-reminder-agent", "fragments", user)
    agent = await sync_to_async(load_agent)(session)
    request = rf.get("/")
    request.user = user
    namespace: dict[str, Any] = {
        "agent": agent,
        "messages": [user_message("A stored note")],
        "request": request,
        "SupportAgent": ReadmeTicketAgent,
        "datetime": datetime,
        "UTC": UTC,
        "user_text_message": user_text_message,
    }
    code = compile(sample[1], sample_id(sample), "exec", flags=FLAGS)
    outcome = eval(code, namespace)  # noqa: S307 - our own documentation; a coroutine with top-level await
    await outcome
