"""How many turns are not finished yet: a session's (queued, and all) and its owner's.

What a new turn's admission weighs (the deployment's limits, and whether it overlaps another
turn of its session). The counts are annotations of the session's row, so that admission
reads them in the statement that reads the row; `unfinished_turns` reads them on their own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import F, Func, IntegerField, OuterRef, QuerySet, Subquery

from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.models import Session, Turn

_QUEUED, _UNFINISHED, _OWNER_UNFINISHED = "unfinished_queued", "unfinished_in_session", "unfinished_of_owner"


@dataclass(frozen=True)
class UnfinishedTurns:
    queued: int  # the session's turns waiting for its lock
    in_session: int  # the session's turns queued or running
    of_owner: int  # the owner's turns queued or running, across sessions (0 when not counted)


def _count(turns: QuerySet[Turn]) -> Subquery:
    # A COUNT the ORM does not know is an aggregate: no GROUP BY, and always one row.
    counted = turns.order_by().annotate(n=Func(F("pk"), function="COUNT", output_field=IntegerField()))
    return Subquery(counted.values("n"), output_field=IntegerField())


def annotations(*, of_owner: bool) -> dict[str, Any]:
    """The counts as annotations of a Session row; `of_owner`: the owner's are counted too
    (a scan of the owner's sessions, only wanted when a per-user limit applies)."""
    unfinished = Turn.objects.exclude(status__in=Turn.FINISHED)
    counts = {
        _QUEUED: _count(Turn.objects.filter(session=OuterRef("pk"), status=Turn.Status.QUEUED)),
        _UNFINISHED: _count(unfinished.filter(session=OuterRef("pk"))),
    }
    if of_owner:
        counts[_OWNER_UNFINISHED] = _count(unfinished.filter(session__owner=OuterRef("owner_id")))
    return counts


def on(session: Session) -> UnfinishedTurns:
    """The counts of a session row read with `annotations`."""
    return UnfinishedTurns(getattr(session, _QUEUED), getattr(session, _UNFINISHED), getattr(session, _OWNER_UNFINISHED, 0))


def _counts_of(of_owner: bool) -> CompiledQuery:
    counts = annotations(of_owner=of_owner)
    return CompiledQuery(lambda pk: Session.objects.filter(pk=pk).annotate(**counts).values_list(*counts))


_COUNTS = {of_owner: _counts_of(of_owner) for of_owner in (False, True)}


def unfinished_turns(session_id: int, *, of_owner: bool) -> UnfinishedTurns:
    """As stored now; a session that does not exist has none."""
    row = _COUNTS[of_owner].row(session_id)
    if row is None:
        return UnfinishedTurns(0, 0, 0)
    return UnfinishedTurns(*(int(count) for count in row), *(() if of_owner else (0,)))
