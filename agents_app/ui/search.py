"""Finding a user's conversations by title, instance name or message text.

A plain case-insensitive substring match; a ranked full-text search can replace this one
function without touching the views."""
from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from agents_app.storage.models import Session


def search_sessions(user: Any, query: str) -> QuerySet[Session]:
    sessions = Session.objects.filter(owner=user).select_related("agent").order_by("-updated_at")
    query = query.strip()
    if not query:
        return sessions
    matching = Q(title__icontains=query) | Q(name__icontains=query) | Q(messages__parts__icontains=query)
    return sessions.filter(pk__in=Session.objects.filter(owner=user).filter(matching).values("pk"))
