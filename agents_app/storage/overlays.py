"""Compaction overlays on a path: which apply, and the conversation as the model sees it."""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Exists, OuterRef

from agents_app.protocol.messages import UIMessage
from agents_app.storage.models import Compaction, Session


@dataclass(frozen=True)
class Overlay:
    id: int
    from_uid: str
    to_uid: str
    summary: str

    def message(self) -> UIMessage:
        return {"id": f"compaction_{self.id}", "role": "assistant", "parts": [{"type": "text", "text": self.summary}]}


def compactions_stored() -> Exists:
    """Whether a session (the outer query's row) has compaction overlays: when it has none,
    its messages are what the model sees."""
    return Exists(Compaction.objects.filter(session=OuterRef("pk")))


def overlays_on_path(session: Session, path_uids: list[str]) -> list[Overlay]:
    """Overlays whose whole range lies on this path, latest first when ranges compete."""
    positions = {uid: index for index, uid in enumerate(path_uids)}
    rows = Compaction.objects.filter(session=session).select_related("from_message", "to_message").order_by("-id")
    chosen: list[Overlay] = []
    covered: set[int] = set()
    for row in rows:
        start, end = positions.get(row.from_message.uid), positions.get(row.to_message.uid)
        if start is None or end is None or end < start or covered & set(range(start, end + 1)):
            continue
        covered |= set(range(start, end + 1))
        chosen.append(Overlay(row.pk, row.from_message.uid, row.to_message.uid, row.summary))
    return chosen


def apply_overlays(session: Session, messages: list[UIMessage]) -> list[UIMessage]:
    """What the model sees: each overlaid range replaced by its summary message."""
    overlays = overlays_on_path(session, [m["id"] for m in messages])
    if not overlays:
        return messages
    starts = {o.from_uid: o for o in overlays}
    result: list[UIMessage] = []
    skipping_until: str | None = None
    for message in messages:
        if skipping_until is not None:
            if message["id"] == skipping_until:
                skipping_until = None
            continue
        overlay = starts.get(message["id"])
        if overlay is None:
            result.append(message)
            continue
        result.append(overlay.message())
        if message["id"] != overlay.to_uid:
            skipping_until = overlay.to_uid
    return result


def compaction_marks(session_id: int, messages: list[UIMessage]) -> list[UIMessage]:
    """Originals covered by an overlay carry `metadata.compaction = {id}` (computed on read)."""
    if not Compaction.objects.filter(session_id=session_id).exists():
        return messages
    overlays = overlays_on_path(Session(pk=session_id), [m["id"] for m in messages])
    if not overlays:
        return messages
    covering: dict[str, int] = {}
    uids = [m["id"] for m in messages]
    for overlay in overlays:
        for uid in uids[uids.index(overlay.from_uid) : uids.index(overlay.to_uid) + 1]:
            covering[uid] = overlay.id
    marked = []
    for message in messages:
        if message["id"] in covering:
            message = {**message, "metadata": {**(message.get("metadata") or {}), "compaction": {"id": covering[message["id"]]}}}
        marked.append(message)
    return marked
