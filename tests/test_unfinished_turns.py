"""The unfinished turns a new turn's admission weighs (storage/unfinished_turns.py)."""
from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from agents_app.storage import client_messages, unfinished_turns
from agents_app.storage.models import Turn
from agents_app.turns.instances import resolve_session

pytestmark = [pytest.mark.django_db, pytest.mark.backends]


def _turns(session: Any, *statuses: str) -> None:
    for index, status in enumerate(statuses):
        Turn.objects.create(session=session, request_id=f"{session.name}-{index}", status=status)


def test_a_session_counts_its_queued_and_running_turns_and_its_owner_counts_every_session(user: Any) -> None:
    asked = resolve_session("chat-agent", "counted", user)
    other = resolve_session("chat-agent", "counted-too", user)
    _turns(asked, Turn.Status.QUEUED, Turn.Status.QUEUED, Turn.Status.STREAMING, Turn.Status.COMPLETED, Turn.Status.ERROR)
    _turns(other, Turn.Status.RUNNING, Turn.Status.ABORTED)
    assert unfinished_turns.unfinished_turns(asked.pk, of_owner=True) == unfinished_turns.UnfinishedTurns(2, 3, 4)
    assert unfinished_turns.unfinished_turns(asked.pk, of_owner=False) == unfinished_turns.UnfinishedTurns(2, 3, 0)


def test_the_counts_read_with_the_session_row_are_the_counts_read_alone(user: Any) -> None:
    session = resolve_session("chat-agent", "counted-with-row", user)
    _turns(session, Turn.Status.QUEUED, Turn.Status.RUNNING, Turn.Status.SKIPPED)
    read = client_messages.SessionRead(unfinished_turns.annotations(of_owner=True))
    with transaction.atomic():
        row = read.locked(session.pk).session
    assert unfinished_turns.on(row) == unfinished_turns.unfinished_turns(session.pk, of_owner=True)


def test_a_missing_session_has_no_unfinished_turns() -> None:
    assert unfinished_turns.unfinished_turns(10_000_000, of_owner=True) == unfinished_turns.UnfinishedTurns(0, 0, 0)
