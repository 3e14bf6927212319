"""The resumable chunk log: exact order, batching, retention (protocol §8)."""
from datetime import timedelta

import pytest
from django.utils import timezone

from agents_app.turns.instances import resolve_session
from agents_app.storage import chunk_log
from agents_app.storage.models import Turn, TurnChunk

pytestmark = pytest.mark.django_db


@pytest.fixture
def turn(user):
    session = resolve_session("scripted-agent", "log", user)
    return Turn.objects.create(session=session, request_id="r1", status=Turn.Status.STREAMING)


def test_batches_replay_in_exact_order_and_content(turn):
    chunk_log.write_batch(turn.pk, 0, ['{"a":1}', '{"b":2}'])
    chunk_log.write_batch(turn.pk, 2, ['{"c":3}'])
    assert chunk_log.read_bodies(turn.pk) == [(0, '{"a":1}'), (1, '{"b":2}'), (2, '{"c":3}')]
    assert chunk_log.read_bodies(turn.pk, 1, 1) == [(1, '{"b":2}')]
    turn.refresh_from_db()
    assert turn.chunk_count == 3 and turn.heartbeat_at is not None


def test_a_chunk_above_the_storage_cap_keeps_its_slot_but_not_its_body(turn):
    huge = '"' + "x" * (chunk_log.MAX_STORED_CHUNK_BYTES + 10) + '"'
    chunk_log.write_batch(turn.pk, 0, [huge, '{"after":1}'])
    assert chunk_log.read_bodies(turn.pk) == [(0, None), (1, '{"after":1}')]


def test_finished_buffers_are_swept_after_ten_minutes_and_abandoned_ones_after_an_hour(turn, user):
    chunk_log.write_batch(turn.pk, 0, ["{}"])
    finished = Turn.objects.create(session=turn.session, request_id="r2", status=Turn.Status.COMPLETED, finished_at=timezone.now() - timedelta(minutes=11))
    TurnChunk.objects.create(turn=finished, seq=0, bodies=["{}"])
    fresh = Turn.objects.create(session=turn.session, request_id="r3", status=Turn.Status.COMPLETED, finished_at=timezone.now())
    TurnChunk.objects.create(turn=fresh, seq=0, bodies=["{}"])
    Turn.objects.filter(pk=turn.pk).update(heartbeat_at=timezone.now() - timedelta(hours=2))
    chunk_log.sweep()
    assert not TurnChunk.objects.filter(turn__in=[finished, turn]).exists()
    assert TurnChunk.objects.filter(turn=fresh).exists()
    turn.refresh_from_db()
    assert turn.status == "error"
