"""The sidebar's conversations: only those with a message, newest first, grouped by date."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.utils import timezone

from agents_app.storage.models import Session
from agents_app.ui.search import search_sessions


@dataclass
class DateGroup:
    label: str
    sessions: list[Session]


def date_label(day: date, today: date) -> str:
    if day >= today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    if day > today - timedelta(days=7):
        return "Previous 7 days"
    return "Older"


def grouped_sessions(user: Any, query: str = "", today: date | None = None) -> list[DateGroup]:
    today = today or timezone.localdate()
    groups: list[DateGroup] = []
    for session in search_sessions(user, query):
        label = date_label(timezone.localdate(session.last_activity or session.updated_at), today)
        if not groups or groups[-1].label != label:
            groups.append(DateGroup(label, []))
        groups[-1].sessions.append(session)
    return groups
