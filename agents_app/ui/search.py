"""Finding a user's conversations by title, instance name or message text. A session with
no message yet (an empty chat) is not a conversation and is never listed.

Titles and names match as case-insensitive substrings; message text through the ranked
full-text search (storage/search.py), so "running" also finds "run"."""
from __future__ import annotations

from typing import Any

from django.db.models import Exists, Max, OuterRef, Q, QuerySet

from agents_app.storage.models import Message, Session
from agents_app.storage.search import search_messages

MESSAGE_HITS = 100


def search_sessions(user: Any, query: str) -> QuerySet[Session]:
    has_messages = Exists(Message.objects.filter(session=OuterRef("pk")))
    sessions = (
        Session.objects.filter(has_messages, owner=user)
        .select_related("agent")
        .annotate(last_activity=Max("messages__created_at"))
        .order_by("-last_activity", "-pk")
    )
    query = query.strip()
    if not query:
        return sessions
    by_text = {hit.session_id for hit in search_messages(query, owner=user, limit=MESSAGE_HITS)}
    return sessions.filter(Q(title__icontains=query) | Q(name__icontains=query) | Q(pk__in=by_text))
