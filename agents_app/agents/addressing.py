"""Server-side addressing (the reference's `getAgentByName`): reach an agent instance by class
and name from a view, a Celery task or another agent, and talk to it as a client would.

    support = await get_agent_by_name(SupportAgent, "ticket-42", owner=request.user)
    await support.save_messages([...])          # a turn, through the one runner
    await support.some_callable_method(...)     # plain method calls
    response = await support.fetch("report", method="POST", json={"since": "2026-01-01"})

Instances live in their owner's namespace, exactly as `/agents/<agent>/<name>` does for a
signed-in user; `owner=None` is the anonymous namespace.
"""
from __future__ import annotations

import json as jsonlib
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, QueryDict

from agents_app.protocol.naming import agent_segment
from agents_app.turns.instances import UnknownAgent, load_agent, resolve_session

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from agents_app.agents.agent import Agent

A = TypeVar("A", bound="Agent")


async def get_agent_by_name(agent_class: type[A], name: str, *, owner: AbstractBaseUser | None = None) -> A:
    """The `agent_class` instance `name` of `owner`, created on first use.

    Raises `UnknownAgent` when the class is not registered (see `register_agent`) or is
    disabled in the admin, `InvalidSessionName` for an unusable name."""
    segment = agent_segment(agent_class.__name__)

    def load() -> Agent:
        return load_agent(resolve_session(segment, name, owner))

    agent = await sync_to_async(load)()
    if not isinstance(agent, agent_class):
        raise UnknownAgent(f"{agent_class.__name__} is not the class registered as {segment!r}")
    return agent


def build_request(
    agent: Agent,
    path: str,
    *,
    method: str,
    query: dict[str, Any] | None,
    json: Any,
    body: bytes | str | None,
    headers: dict[str, str] | None,
) -> HttpRequest:
    """An HttpRequest for `agent.on_request`, as if its owner had sent it to the instance URL."""
    if json is not None and body is not None:
        raise ValueError("Pass json= or body=, not both.")
    request = HttpRequest()
    request.method = method.upper()
    request.path = request.path_info = f"/agents/{agent.session.agent.slug}/{agent.session.name}/{path.lstrip('/')}"
    query_string = urlencode(query or {}, doseq=True)
    request.GET = QueryDict(query_string)
    request.META.update({"QUERY_STRING": query_string, "REQUEST_METHOD": request.method, "SERVER_NAME": "internal", "SERVER_PORT": "80"})
    for header, value in (headers or {}).items():
        key = header.upper().replace("-", "_")
        request.META[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    if json is not None:
        body = jsonlib.dumps(json)
        request.META["CONTENT_TYPE"] = "application/json"
    raw = body.encode() if isinstance(body, str) else (body or b"")
    request._body = raw  # noqa: SLF001 - Django reads the body from here (no stream behind this request)
    request.META["CONTENT_LENGTH"] = str(len(raw))
    request.user = agent.session.owner or AnonymousUser()
    return request
