"""The unfinished turns a new turn's admission weighs (storage/unfinished_turns.py)."""
from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from agents_app.storage import client_messages, unfinished_turns
from agents_app.storage.models import Turn
from agents_app.turns.instances import resolve_session
from tests.conftest import user_message

pytestmark = [pytest.mark.django_db, pytest.mark.backends]


def _turns(session: Any, *statuses: str) -> None:
    for index, status in enumerate(statuses):
        Turn.objects.create(session=session, request_id=f"{session.name}-{index}", status=status)


def test_a_session_counts_its_queued_and_running_turns_and_its_owner_counts_every_session(user: Any) -> None:
    asked = resolve_session("chat-agent", "counted", user)
    other = resolve_session("chat-agent", "counted-too", user)
    _turns(asked, Turn.Status.QUEUED, Turn.Status.QUEUED, Turn.Status.STREAMING, Turn.Status.COMPLETED, Turn.Status.ERROR)
    _turns(other, Turn.Status.RUNNING, Turn.Status.ABORTED)
    assert unfinished_turns.unfinished_turns(asked.pk, user.pk) == unfinished_turns.UnfinishedTurns(2, 3, 4)
    assert unfinished_turns.unfinished_turns(asked.pk, None) == unfinished_turns.UnfinishedTurns(2, 3, 0)


def test_the_counts_read_with_the_session_and_its_messages_are_the_counts_read_alone(user: Any) -> None:
    session = resolve_session("chat-agent", "counted-with-row", user)
    client_messages.upsert(session, [user_message("one", "m1"), user_message("two", "m2")], move_leaf=True)
    _turns(session, Turn.Status.QUEUED, Turn.Status.RUNNING, Turn.Status.SKIPPED)
    with transaction.atomic():
        locked = client_messages.lock_session(session.pk, user.pk)
    assert sorted(locked.messages) == ["m1", "m2"]  # two rows joined, each turn counted once
    assert locked.unfinished == unfinished_turns.unfinished_turns(session.pk, user.pk) == unfinished_turns.UnfinishedTurns(1, 2, 2)


def test_a_missing_session_has_no_unfinished_turns() -> None:
    assert unfinished_turns.unfinished_turns(10_000_000, None) == unfinished_turns.UnfinishedTurns(0, 0, 0)
