"""Whether a block of code wrote to the database (storage/write_watch.py)."""
from __future__ import annotations

from typing import Any

import pytest

from agents_app.storage import write_watch
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session
from agents_app.turns.instances import resolve_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


async def test_reads_leave_the_watch_clean_and_a_write_on_a_database_thread_is_noted(user: Any) -> None:
    session = await db_async(resolve_session)("chat-agent", "watched", user)
    with write_watch.watching() as reading:
        assert await db_async(lambda: Session.objects.filter(pk=session.pk).count())() == 1
    assert not reading.wrote
    with write_watch.watching() as writing:
        await db_async(lambda: Session.objects.filter(pk=session.pk).update(title="Watched"))()
    assert writing.wrote


async def test_a_write_outside_the_block_is_not_the_blocks(user: Any) -> None:
    session = await db_async(resolve_session)("chat-agent", "unwatched", user)
    with write_watch.watching() as watch:
        pass
    await db_async(lambda: Session.objects.filter(pk=session.pk).update(title="Later"))()
    assert not watch.wrote
