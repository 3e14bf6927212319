"""Message concurrency: what happens to a submit that arrives while another turn is queued
or running (protocol §9.12). Regenerations, continuations and programmatic turns are always
queued; only overlapping `submit-message` requests are subject to the strategy."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents_app.protocol.messages import text_of
from agents_app.storage import transcript
from agents_app.storage.models import Message, Session, Turn

DEFAULT_DEBOUNCE_MS = 750
_STRATEGIES = frozenset({"queue", "latest", "merge", "drop", "debounce"})


@dataclass(frozen=True)
class Concurrency:
    strategy: str = "queue"
    debounce_ms: int = DEFAULT_DEBOUNCE_MS

    @classmethod
    def parse(cls, value: Any) -> Concurrency:
        """Accepts "queue" | "latest" | "merge" | "drop" | "debounce" or
        {"strategy": "debounce", "debounceMs": N}; anything else means queue."""
        if isinstance(value, dict):
            strategy = value.get("strategy", "queue")
            ms = value.get("debounceMs")
            valid_ms = isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0
            return cls(strategy if strategy in _STRATEGIES else "queue", int(ms) if valid_ms else DEFAULT_DEBOUNCE_MS)
        return cls(value if value in _STRATEGIES else "queue")

    @property
    def supersedes(self) -> bool:
        return self.strategy in {"latest", "merge", "debounce"}


def is_busy(session_id: int) -> bool:
    """Another turn is queued or running: a submit now overlaps it."""
    return Turn.objects.filter(session_id=session_id).exclude(status__in=Turn.FINISHED).exists()


def has_newer_overlapping_submit(turn: Turn) -> bool:
    return Turn.objects.filter(
        session_id=turn.session_id, id__gt=turn.pk, status=Turn.Status.QUEUED, overlapping=True, trigger="submit-message"
    ).exists()


async def wait_for_quiet_window(turn: Turn, policy: Concurrency) -> None:
    """Debounce: a turn starts no earlier than its admission time plus the quiet window."""
    deadline = turn.created_at + timedelta(milliseconds=policy.debounce_ms)
    remaining = (deadline - timezone.now()).total_seconds()
    if remaining > 0:
        await asyncio.sleep(remaining)


@transaction.atomic
def merge_trailing_user_messages(session: Session) -> bool:
    """`merge` (ai-chat): the run of user messages after the last reply becomes one message
    with the id of the last, its texts joined by blank lines. True when a run was merged."""
    path = transcript.active_path(session)
    run: list[Message] = []
    for message in reversed(path):
        if message.role != "user":
            break
        run.insert(0, message)
    if len(run) < 2:
        return False
    last = run[-1]
    parts = [part for message in run for part in message.parts if part.get("type") != "text"]
    joined = "\n\n".join(text for text in (text_of(m.as_ui_message()) for m in run) if text)
    last.parts = [{"type": "text", "text": joined}, *parts]
    last.parent = run[0].parent
    last.save(update_fields=["parts", "parent", "updated_at"])
    Message.objects.filter(pk__in=[m.pk for m in run[:-1]]).delete()
    return True
