"""Finding the session behind a URL and the agent object that serves it."""
from __future__ import annotations

from typing import Any

from django.db import IntegrityError

from agents_app.runtime.agent import Agent
from agents_app.runtime.registry import agent_class, agent_record
from agents_app.storage.models import Session


class UnknownAgent(LookupError):
    pass


def resolve_session(segment: str, name: str, user: Any) -> Session:
    """The session for `/agents/<segment>/<name>` owned by `user` (None = anonymous), created
    on first use: every user has their own namespace of instance names."""
    record = agent_record(segment)
    if record is None:
        raise UnknownAgent(segment)
    owner = user if user is not None and user.is_authenticated else None
    lookup = {"agent": record, "name": name, "owner": owner}
    try:
        session, _ = Session.objects.select_related("agent").get_or_create(**lookup)
    except IntegrityError:  # created concurrently by another connection
        session = Session.objects.select_related("agent").get(**lookup)
    return session


def load_agent(session: Session) -> Agent:
    cls = agent_class(session.agent.slug)
    if cls is None:
        raise UnknownAgent(session.agent.slug)
    return cls(session, session.agent)
