"""Finding a user's conversations by title, instance name or message text.

Titles and names match as case-insensitive substrings; message text through the ranked
full-text search (storage/search.py), so "running" also finds "run"."""
from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from agents_app.storage.models import Session
from agents_app.storage.search import search_messages

MESSAGE_HITS = 100


def search_sessions(user: Any, query: str) -> QuerySet[Session]:
    sessions = Session.objects.filter(owner=user).select_related("agent").order_by("-updated_at")
    query = query.strip()
    if not query:
        return sessions
    by_text = {hit.session_id for hit in search_messages(query, owner=user, limit=MESSAGE_HITS)}
    return sessions.filter(Q(title__icontains=query) | Q(name__icontains=query) | Q(pk__in=by_text))
