"""How many turns are not finished yet: a session's (queued, and all) and its owner's.

What a new turn's admission weighs (the deployment's limits, and whether it overlaps another
turn of its session). The counts are annotations by key, so that admission reads them in the
statement that reads its session (storage/client_messages.py); `unfinished_turns` reads them
on their own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import F, Func, IntegerField, QuerySet, Subquery

from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.models import Session, Turn

QUEUED, IN_SESSION, OF_OWNER = "unfinished_queued", "unfinished_in_session", "unfinished_of_owner"


@dataclass(frozen=True)
class UnfinishedTurns:
    queued: int  # the session's turns waiting for its lock
    in_session: int  # the session's turns queued or running
    of_owner: int  # the owner's turns queued or running, across sessions (0 when not counted)

    @classmethod
    def of(cls, queued: Any, in_session: Any, of_owner: Any = 0) -> UnfinishedTurns:
        """From the annotations' values as the driver returns them."""
        return cls(int(queued), int(in_session), int(of_owner))


def _count(turns: QuerySet[Turn]) -> Subquery:
    # A COUNT the ORM does not know is an aggregate: no GROUP BY, and always one row.
    counted = turns.order_by().annotate(n=Func(F("pk"), function="COUNT", output_field=IntegerField()))
    return Subquery(counted.values("n"), output_field=IntegerField())


def annotations(session_id: Any, owner_id: Any | None) -> dict[str, Subquery]:
    """The counts for a session and (unless `owner_id` is None) its owner, by key: they do not
    refer to the query's rows, so a statement joining the session with its messages evaluates
    them once, not per row. The owner's count scans the owner's sessions: only wanted when a
    per-user limit applies."""
    unfinished = Turn.objects.exclude(status__in=Turn.FINISHED)
    counts = {
        QUEUED: _count(Turn.objects.filter(session_id=session_id, status=Turn.Status.QUEUED)),
        IN_SESSION: _count(unfinished.filter(session_id=session_id)),
    }
    if owner_id is not None:
        counts[OF_OWNER] = _count(unfinished.filter(session__owner_id=owner_id))
    return counts


_SESSIONS = CompiledQuery(lambda pk: Session.objects.filter(pk=pk).annotate(**annotations(pk, None)).values_list(QUEUED, IN_SESSION))
_SESSIONS_AND_OWNERS = CompiledQuery(
    lambda pk, owner: Session.objects.filter(pk=pk).annotate(**annotations(pk, owner)).values_list(QUEUED, IN_SESSION, OF_OWNER)
)


def unfinished_turns(session_id: int, owner_id: int | None) -> UnfinishedTurns:
    """As stored now (the owner's counted unless `owner_id` is None); a session that does
    not exist has none."""
    row = _SESSIONS.row(session_id) if owner_id is None else _SESSIONS_AND_OWNERS.row(session_id, owner_id)
    return UnfinishedTurns(0, 0, 0) if row is None else UnfinishedTurns.of(*row)
