"""One-row writes without a queryset (storage/row_writes.py): the same rows the ORM would
write, on SQLite and PostgreSQL."""
from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from agents_app.storage import row_writes
from agents_app.storage.models import Message, Session, Turn
from agents_app.turns.instances import resolve_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


@pytest.fixture
def session(user: Any) -> Session:
    return resolve_session("chat-agent", "row-writes", user)


def test_an_inserted_row_reads_back_as_the_orm_would_have_stored_it(session: Session) -> None:
    message = Message(session=session, uid="m1", role="user", parts=[{"type": "text", "text": "hi"}], metadata=None)
    assert row_writes.insert(message)
    stored = Message.objects.get(pk=message.pk)
    assert (stored.uid, stored.role, stored.parts) == ("m1", "user", [{"type": "text", "text": "hi"}])
    assert Message.objects.filter(pk=message.pk, metadata__isnull=True).exists()  # SQL NULL, not JSON null
    assert stored.created_at is not None and stored.updated_at is not None  # default and auto_now applied


def test_an_insert_that_would_repeat_a_unique_key_stores_nothing_and_the_transaction_goes_on(session: Session) -> None:
    with transaction.atomic():
        assert row_writes.insert(Turn(session=session, request_id="once"), unless_conflict_on=("session", "request_id"))
        again = Turn(session=session, request_id="once", trigger="regenerate-message")
        assert not row_writes.insert(again, unless_conflict_on=("session", "request_id"))
        assert again.pk is None
        assert Turn.objects.filter(session=session).count() == 1  # the transaction is still usable
    assert Turn.objects.get(session=session, request_id="once").trigger == "submit-message"


def test_an_update_changes_only_the_rows_matching_every_condition(session: Session) -> None:
    session.turn_lock = "held"
    session.save(update_fields=["turn_lock"])
    now = timezone.now()
    assert row_writes.update(Session, {"pk": session.pk, "turn_lock": "other"}, turn_lock="mine") == 0
    assert row_writes.update(Session, {"pk": session.pk, "turn_lock": "held"}, turn_lock="mine", turn_lock_heartbeat=now) == 1
    session.refresh_from_db()
    assert (session.turn_lock, session.turn_lock_heartbeat) == ("mine", now)
    assert row_writes.update(Session, {"pk": session.pk}, terminal={"requestId": "r1", "body": "failed"}) == 1
    session.refresh_from_db()
    assert session.terminal == {"requestId": "r1", "body": "failed"}
