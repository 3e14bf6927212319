"""What a Think turn reads about its session besides the conversation (one compiled query)."""
from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from agents_app.agents.stored_features import StoredFeatures, features_on, read_stored_features
from agents_app.storage import client_messages
from agents_app.storage.models import Compaction, Message, Session, ToolGrant
from agents_app.turns.instances import fresh_agent, resolve_session
from agents_app.turns.registry import agent_class

pytestmark = [pytest.mark.django_db, pytest.mark.backends]


def test_each_session_reads_its_own_features_as_they_are_stored_now(user: Any) -> None:
    plain = resolve_session("chat-agent", "features-plain", user)
    granted = resolve_session("chat-agent", "features-granted", user)
    assert read_stored_features(plain.pk) == StoredFeatures()
    assert read_stored_features(granted.pk) == StoredFeatures()

    Session.objects.filter(pk=granted.pk).update(allowed_tools=["deleteFile"])
    ToolGrant.objects.create(user=user, agent="chat-agent", tool="research")
    first = Message.objects.create(session=granted, uid="m1", role="user", parts=[{"type": "text", "text": "Hi"}])
    Compaction.objects.create(session=granted, from_message=first, to_message=first, summary="earlier")

    features = read_stored_features(granted.pk)
    assert features.allowed_tools == frozenset({"deleteFile"})
    assert features.tool_grants and features.compactions
    assert not (features.runtime_blocks or features.extensions or features.mcp_servers)
    # The same owner and agent: the grant shows here too; the chat's own allowances do not.
    assert read_stored_features(plain.pk) == StoredFeatures(tool_grants=True)


def test_a_deleted_session_has_no_features(user: Any) -> None:
    session = resolve_session("chat-agent", "features-gone", user)
    Session.objects.filter(pk=session.pk).delete()
    assert read_stored_features(session.pk) == StoredFeatures()


def test_a_turns_session_row_read_at_admission_carries_the_same_features_as_their_own_read(user: Any) -> None:
    """A turn that took its lock at admission reads them with the session's row."""
    session = resolve_session("chat-agent", "features-with-row", user)
    Session.objects.filter(pk=session.pk).update(allowed_tools=["deleteFile"])
    ToolGrant.objects.create(user=user, agent="chat-agent", tool="research")
    with transaction.atomic():
        row = client_messages.lock_session(session.pk, annotated_for=agent_class("chat-agent")).row
    assert features_on(row) == read_stored_features(session.pk)
    assert features_on(row) == StoredFeatures(allowed_tools=frozenset({"deleteFile"}), tool_grants=True)
    assert features_on(fresh_agent(session.pk).session) is None  # read without them
