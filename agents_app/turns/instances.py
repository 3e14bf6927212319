"""Finding the session behind a URL and the agent object that serves it."""
from __future__ import annotations

from typing import Any

from agents_app import limits
from agents_app.turns.agent_interface import HostedAgent
from agents_app.turns.registry import agent_class, agent_record
from agents_app.storage import row_writes
from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.models import Session


# Session.name's column width.
MAX_SESSION_NAME_LENGTH = 200


class UnknownAgent(LookupError):
    pass


class InvalidSessionName(ValueError):
    """A session name that cannot be stored; the message says why, for the client."""


def check_session_name(name: str) -> None:
    if not name or len(name) > MAX_SESSION_NAME_LENGTH:
        raise InvalidSessionName(f"Session names are 1 to at most {MAX_SESSION_NAME_LENGTH} characters.")
    if any(ord(character) < 32 for character in name):
        raise InvalidSessionName("Session names cannot contain control characters.")


def _lookup(segment: str, name: str, user: Any) -> dict[str, Any]:
    record = agent_record(segment)
    if record is None:
        raise UnknownAgent(segment)
    check_session_name(name)
    owner = user if user is not None and user.is_authenticated else None
    return {"agent": record, "name": name, "owner": owner}


# Every connection looks its session up as it opens: compiled once (an owner's and an
# anonymous session differ in SQL: `owner_id = %s` against `owner_id IS NULL`).
_OWNED_SESSION = CompiledQuery(lambda agent, name, owner: Session.objects.select_related("agent").filter(agent_id=agent, name=name, owner_id=owner))
_ANONYMOUS_SESSION = CompiledQuery(lambda agent, name: Session.objects.select_related("agent").filter(agent_id=agent, name=name, owner__isnull=True))


def _existing(lookup: dict[str, Any]) -> Session | None:
    if lookup["owner"] is None:
        return _ANONYMOUS_SESSION.instance(lookup["agent"].pk, lookup["name"])
    return _OWNED_SESSION.instance(lookup["agent"].pk, lookup["name"], lookup["owner"].pk)


def find_session(segment: str, name: str, user: Any) -> Session | None:
    """The existing session for `/agents/<segment>/<name>` of `user`, never creating one: a
    GET (a link anyone can plant) must not add a session to someone's sidebar."""
    return _existing(_lookup(segment, name, user))


def transient_session(segment: str, name: str, user: Any) -> Session:
    """An unsaved session for serving a GET to an agent's own `on_request` before the
    session exists."""
    return Session(**_lookup(segment, name, user))


def resolve_session(segment: str, name: str, user: Any, *, limit_creation: bool = False) -> Session:
    """The session for `/agents/<segment>/<name>` owned by `user` (None = anonymous), created
    on first use: every user has their own namespace of instance names. `limit_creation`
    (client-facing entry points) applies the new-sessions-per-minute limit."""
    lookup = _lookup(segment, name, user)
    existing = _existing(lookup)
    if existing is not None:
        return existing
    if limit_creation:
        limits.check_new_session(lookup["owner"])  # raises LimitReached
    # One statement, which needs no transaction of its own (get_or_create's read again, its
    # savepoint and save() cost a new session's first connection ~1.2 ms of CPU).
    session = Session(**lookup)
    if row_writes.insert(session, unless_any_conflict=True):
        return session
    created_meanwhile = _existing(lookup)  # by another connection
    if created_meanwhile is None:  # deleted again since: the next connection creates it anew
        raise Session.DoesNotExist(f"session {name!r} was deleted while it was created")
    return created_meanwhile


# Read for every turn and every frame that needs the agent: compiled once (building the
# select_related queryset cost ~450 µs, four times the read).
_SESSION_WITH_AGENT = CompiledQuery(lambda pk: Session.objects.select_related("agent").filter(pk=pk))


def session_with_agent(session_id: int) -> Session | None:
    """The session row as it is now, with its agent's record; None once it is deleted."""
    return _SESSION_WITH_AGENT.instance(session_id)


def fresh_agent(session_id: int) -> HostedAgent:
    """An agent over the session's current row (Session.DoesNotExist once it is deleted)."""
    session = session_with_agent(session_id)
    if session is None:
        raise Session.DoesNotExist(f"session {session_id} does not exist")
    return load_agent(session)


def load_agent(session: Session) -> HostedAgent:
    cls = agent_class(session.agent.slug)
    if cls is None:
        raise UnknownAgent(session.agent.slug)
    return cls(session, session.agent)
