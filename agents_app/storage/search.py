"""Full-text search over message text: SQLite FTS5 on SQLite, PostgreSQL full-text search
(tsvector with a GIN expression index) on PostgreSQL, behind one function.

Both indexes follow `Message.text_content`, which every write keeps equal to the message's
text: the FTS5 table through triggers, the GIN index because it is an expression index.
Every word of the query must match (word stems: "running" finds "run"); a query with no
words finds nothing rather than raising.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank, SearchVector
from django.db import connection
from django.db.models import F, QuerySet
from django.utils import timezone

from agents_app.storage.models import Message

FTS_TABLE = "agents_app_message_fts"
SEARCH_CONFIG = "english"
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class SearchHit:
    session_id: int
    id: str
    role: str
    snippet: str
    rank: float
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "id": self.id,
            "role": self.role,
            "snippet": self.snippet,
            "rank": self.rank,
            "createdAt": self.created_at.isoformat(),
        }


def query_words(query: str) -> list[str]:
    return _WORD.findall(query or "")[:20]


def search_messages(query: str, *, session_ids: list[int] | None = None, owner: Any = None, limit: int = 20) -> list[SearchHit]:
    """Messages matching every word of `query`, best first, with a highlighted snippet
    (matches in [brackets]). Scope by sessions, by the sessions of `owner`, or both."""
    words = query_words(query)
    if not words:
        return []
    scope = Message.objects.all()
    if session_ids is not None:
        scope = scope.filter(session_id__in=session_ids)
    if owner is not None:
        scope = scope.filter(session__owner=owner)
    limit = max(1, min(int(limit), 100))
    if connection.vendor == "postgresql":
        return _search_postgres(scope, words, limit)
    return _search_sqlite(scope, words, limit)


def _search_postgres(scope: QuerySet[Message], words: list[str], limit: int) -> list[SearchHit]:
    query = SearchQuery(" ".join(words), search_type="plain", config=SEARCH_CONFIG)
    vector = SearchVector("text_content", config=SEARCH_CONFIG)
    rows = (
        scope.annotate(document=vector)
        .filter(document=query)
        .annotate(
            rank=SearchRank(F("document"), query),
            snippet=SearchHeadline("text_content", query, config=SEARCH_CONFIG, start_sel="[", stop_sel="]", max_words=20, min_words=8),
        )
        .order_by("-rank", "-id")
        .values_list("session_id", "uid", "role", "snippet", "rank", "created_at")[:limit]
    )
    return [SearchHit(*row) for row in rows]


def _fts5_phrase(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def _search_sqlite(scope: QuerySet[Message], words: list[str], limit: int) -> list[SearchHit]:
    match = " AND ".join(_fts5_phrase(word) for word in words)
    allowed_sql, allowed_params = scope.values("id").query.sql_with_params()
    sql = (
        f"SELECT m.session_id, m.uid, m.role, snippet({FTS_TABLE}, 0, '[', ']', '…', 12), bm25({FTS_TABLE}), m.created_at "
        f"FROM {FTS_TABLE} JOIN agents_app_message m ON m.id = {FTS_TABLE}.rowid "
        f"WHERE {FTS_TABLE} MATCH %s AND m.id IN ({allowed_sql}) "
        f"ORDER BY bm25({FTS_TABLE}), m.id DESC LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [match, *allowed_params, limit])
        rows = cursor.fetchall()
    # bm25 is lower-is-better; expose higher-is-better like PostgreSQL's rank.
    return [SearchHit(session_id, uid, role, snippet, -float(score), _as_datetime(created)) for session_id, uid, role, snippet, score, created in rows]


def _as_datetime(value: Any) -> datetime:
    """Raw SQLite rows hold naive UTC timestamps as text."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)
