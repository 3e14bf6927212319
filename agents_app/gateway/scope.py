"""Who a model call is for: the turn (session, request id) and per-call gateway options.

The runner enters a scope around every turn; the gateway reads it when a call is made, so
agents need not pass anything through. Who the turn is for, its route and whether any limit
applies are read once when the turn starts (from this process's copies, process_cache.py,
so usually without the database), so that a call with nothing to enforce goes upstream
without a database round trip (limits and budgets, when they apply, are checked against
the database again before every call). Options come from the turn's body (`{"gateway":
{"skipCache": true, "cacheTtl": 60}}`, the seed's gateway options) or from code with
`gateway_options(skip_cache=True)`; the named route (`gateway_id`) from code only.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from agents_app.gateway import call_log, limits, routing
from agents_app.gateway.process_cache import BoundedMap, TableCopy
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Agent, Session


@dataclass(frozen=True)
class GatewayOptions:
    skip_cache: bool = False
    cache_ttl: int | None = None  # seconds; set → this call is cached for that long
    # The named Route this call goes through instead of the agent's. Only code sets it: a
    # client's turn body must not pick a costlier route than the operator gave its agent.
    gateway_id: str | None = None

    @classmethod
    def from_body(cls, body: dict[str, Any] | None) -> GatewayOptions:
        raw = (body or {}).get("gateway")
        if not isinstance(raw, dict):
            return cls()
        ttl = raw.get("cacheTtl")
        return cls(skip_cache=raw.get("skipCache") is True, cache_ttl=ttl if isinstance(ttl, int) and ttl >= 0 else None)


@dataclass(frozen=True)
class Caller:
    agent: str
    user_id: int | None
    route: routing.RouteConfig
    limited: bool


def caller_for(agent: str, user_id: int | None) -> Caller:
    return Caller(agent, user_id, routing.route_for(agent), limits.applies_to(user_id, agent))


# Session id → (agent id, owner id): neither changes once the session exists. The agent's
# slug (what routes and limits match against) can be renamed by an operator: it comes from a
# copy of the agents table, which a rename refreshes like the gateway's own tables.
_session_callers: BoundedMap[int, tuple[int, int | None]] = BoundedMap(max_entries=10_000)
_agent_slugs: TableCopy[dict[int, str]] = TableCopy(lambda: dict(Agent.objects.values_list("pk", "slug")), sources=(Agent,))


def _agent_and_owner(session_id: int) -> tuple[str, int | None] | None:
    known = _session_callers.get(session_id)
    if known is None:
        known = Session.objects.filter(pk=session_id).values_list("agent_id", "owner_id").first()
        if known is None:
            return None
        _session_callers.put(session_id, known)
    agent_id, owner_id = known
    slug = _agent_slugs.get().get(agent_id)
    if slug is None:  # an agent created since the copy was made
        _agent_slugs.clear()
        slug = _agent_slugs.get().get(agent_id, "")
    return slug, owner_id


def load_caller(session_id: int | None) -> Caller:
    row = _agent_and_owner(session_id) if session_id is not None else None
    agent, user_id = row if row is not None else ("", None)
    return caller_for(agent, user_id)


@dataclass(frozen=True)
class CallScope:
    session_id: int | None = None
    request_id: str = ""
    options: GatewayOptions = GatewayOptions()
    caller: Caller | None = None  # None outside a turn: read when the call is made
    held_calls: call_log.HeldCalls | None = None  # a runner's turn: its call-log lines wait for its ending


_current: ContextVar[CallScope] = ContextVar("gateway_call_scope", default=CallScope())


def current() -> CallScope:
    return _current.get()


@contextlib.contextmanager
def _entered(scope: CallScope) -> Iterator[CallScope]:
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def caller_of(session: Session) -> Caller:
    """The caller of a turn of `session`, loaded with its agent (`select_related`): nothing
    more to read about who it is."""
    _session_callers.put(session.pk, (session.agent_id, session.owner_id))
    return caller_for(session.agent.slug, session.owner_id)


def turn_scope(
    session_id: int, request_id: str, body: dict[str, Any] | None, caller: Caller, held_calls: call_log.HeldCalls | None = None
) -> contextlib.AbstractContextManager[CallScope]:
    """The scope of a turn whose caller is known (`caller_of`). With `held_calls`, its model
    calls' log lines are held for the caller to write (see HeldCalls)."""
    return _entered(CallScope(session_id, request_id, GatewayOptions.from_body(body), caller, held_calls))


@contextlib.asynccontextmanager
async def for_turn(session_id: int, request_id: str, body: dict[str, Any] | None) -> AsyncIterator[CallScope]:
    caller = await db_async(load_caller)(session_id)
    with turn_scope(session_id, request_id, body, caller) as scope:
        yield scope


@contextlib.asynccontextmanager
async def for_agent(agent: str, user_id: int | None, session_id: int | None) -> AsyncIterator[CallScope]:
    """Calls an agent makes outside a turn (e.g. from `on_request`): its route, its owner's
    limits and budgets, as inside a turn. The options in force stay."""
    caller = await db_async(caller_for)(agent, user_id)
    with _entered(replace(_current.get(), session_id=session_id, caller=caller)) as scope:
        yield scope


@contextlib.contextmanager
def gateway_options(*, skip_cache: bool | None = None, cache_ttl: int | None = None, gateway_id: str | None = None) -> Iterator[None]:
    """Override the gateway options for the model calls made inside the block."""
    scope = _current.get()
    options = scope.options
    if skip_cache is not None:
        options = replace(options, skip_cache=skip_cache)
    if cache_ttl is not None:
        options = replace(options, cache_ttl=cache_ttl)
    if gateway_id is not None:
        options = replace(options, gateway_id=gateway_id)
    token = _current.set(replace(scope, options=options))
    try:
        yield
    finally:
        _current.reset(token)
