"""A conversation's session is created by the first connection to its name: once, whoever
else opens the same name at the same moment."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connections

from agents_app.storage.models import Session
from agents_app.turns.instances import resolve_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
OPENERS = 8


def opened_together(name: str, user: Any) -> list[Session]:
    """What `OPENERS` connections opening `name` at the same moment each resolved."""
    start = threading.Barrier(OPENERS)

    def open_one(_: int) -> Session:
        start.wait()
        try:
            return resolve_session("chat-agent", name, user, limit_creation=True)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(OPENERS) as pool:
        return list(pool.map(open_one, range(OPENERS)))


@pytest.mark.parametrize("signed_in", [True, False], ids=["signed in", "anonymous"])
def test_connections_opening_a_new_conversation_at_once_share_one_session(user: Any, settings: Any, signed_in: bool) -> None:
    settings.AGENTS_MAX_NEW_SESSIONS_PER_MINUTE = 100
    owner = user if signed_in else None
    sessions = opened_together("opened-together", owner)

    assert len({session.pk for session in sessions}) == 1
    stored = Session.objects.get(name="opened-together")
    assert stored.owner == owner and stored.agent.slug == "chat-agent"
    assert all(session.agent.slug == "chat-agent" and session.owner == owner for session in sessions)


def test_a_new_session_starts_with_the_models_defaults(user: Any) -> None:
    created = resolve_session("chat-agent", "fresh", user)
    stored = Session.objects.get(pk=created.pk)
    assert (stored.title, stored.state, stored.has_state, stored.request_context, stored.allowed_tools, stored.turn_lock) == ("", None, False, {}, [], "")
    assert stored.created_at is not None and stored.updated_at is not None
