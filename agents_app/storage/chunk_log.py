"""The resumable stream store: chunk bodies of a turn, written in batches (protocol §8).

Bodies are stored exactly as broadcast, with consecutive sequence numbers, several per row,
so a stream costs one write per batch rather than one per token. A body above the storage
cap keeps its sequence slot as `None` (broadcast but not replayable, as in the reference).
"""
from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import NamedTuple

from django.db import connection, transaction
from django.utils import timezone

from agents_app.storage import row_writes
from agents_app.storage.models import Turn, TurnChunk
from agents_app.testing import faults

MAX_STORED_CHUNK_BYTES = 1_800_000
COMPLETED_RETENTION = timedelta(minutes=10)
ABANDONED_RETENTION = timedelta(hours=1)


class Batch(NamedTuple):
    """Consecutive chunk bodies of one turn, the first at `first_seq`: one row of the log."""

    turn_id: int
    first_seq: int
    bodies: list[str]


def write_batch(turn_id: int, first_seq: int, bodies: list[str]) -> None:
    """Store one batch and mark the turn as alive (its heartbeat proves a live producer)."""
    faults.point("chunk_log")
    stored = [body if len(body.encode()) <= MAX_STORED_CHUNK_BYTES else None for body in bodies]
    # Every streaming turn writes a batch several times a second. On SQLite each commit takes
    # the database's one write lock: one commit for both rows. On PostgreSQL a transaction
    # would add two round trips (BEGIN, COMMIT) to two autocommit statements.
    # Inside a caller's transaction it adds no savepoint: a failure fails that transaction.
    with transaction.atomic(savepoint=False) if connection.vendor == "sqlite" else contextlib.nullcontext():
        row_writes.insert(TurnChunk(turn_id=turn_id, seq=first_seq, bodies=stored))
        row_writes.update(Turn, {"pk": turn_id}, add={"chunk_count": len(bodies)}, heartbeat_at=timezone.now())


def read_bodies(turn_id: int, from_seq: int = 0, to_seq: int | None = None) -> list[tuple[int, str | None]]:
    """(seq, body) pairs in order, for seq in [from_seq, to_seq]."""
    pairs: list[tuple[int, str | None]] = []
    for batch in TurnChunk.objects.filter(turn_id=turn_id).order_by("seq").values_list("seq", "bodies"):
        first, bodies = batch
        for offset, body in enumerate(bodies):
            seq = first + offset
            if seq >= from_seq and (to_seq is None or seq <= to_seq):
                pairs.append((seq, body))
    return pairs


def sweep(now: timezone.datetime | None = None) -> int:
    """Drop chunk logs nobody can resume any more; the Turn rows stay as history."""
    now = now or timezone.now()
    finished = TurnChunk.objects.filter(
        turn__status__in=Turn.FINISHED, turn__finished_at__lt=now - COMPLETED_RETENTION
    )
    deleted, _ = finished.delete()
    abandoned = Turn.objects.filter(status=Turn.Status.STREAMING, heartbeat_at__lt=now - ABANDONED_RETENTION)
    TurnChunk.objects.filter(turn__in=abandoned).delete()
    deleted += abandoned.update(status=Turn.Status.ERROR, error_text="abandoned stream", finished_at=now)
    return deleted
