"""Transcript repair before each model call (protocol §11.5, think.md §8.4, conformance 148/188).

A tool part left without a result — its process died between `input-available` and the
output — would otherwise stay open forever: providers reject a call without a result (so the
model never learns of it) and the auto-continuation of its message would wait for it. Before
every turn such parts get what `repair_interrupted_tool_part` returns (by default an errored
result the model reads), per part; the repaired messages are stored and every tab gets them.

Left alone: approved calls (their continuation runs them), calls awaiting the user (an approval
request, or a client tool the last request declared) and settled calls, whose input is only
normalised to an object.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db import transaction

from agents_app.protocol import frames
from agents_app.protocol.messages import SETTLED_TOOL_STATES, UIMessage, is_tool_part, normalize_tool_input, tool_name_of
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Message, Session
from agents_app.turns import broadcast

INTERRUPTED_TOOL_TEXT = "The tool call was interrupted before a result was recorded."
Repairer = Callable[[dict[str, Any]], dict[str, Any]]


def interrupted_result(part: dict[str, Any]) -> dict[str, Any]:
    """The default repair: an errored result telling the model what happened."""
    repaired = {key: value for key, value in part.items() if key not in ("output", "preliminary")}
    repaired.update(state="output-error", errorText=INTERRUPTED_TOOL_TEXT, input=normalize_tool_input(part.get("input")))
    return repaired


def awaits_client(part: dict[str, Any], client_tools: Iterable[str]) -> bool:
    """A call only the user or the browser can answer: an approval request, or a client
    tool's call that has its input."""
    state = part.get("state")
    return state == "approval-requested" or (state == "input-available" and tool_name_of(part) in set(client_tools))


def _repaired_part(part: dict[str, Any], client_tools: set[str], repair: Repairer) -> dict[str, Any]:
    if not is_tool_part(part):
        return part
    state = part.get("state")
    if state in SETTLED_TOOL_STATES or state == "approval-responded" or awaits_client(part, client_tools):
        if not isinstance(part.get("input"), dict):  # a string, a list or missing: providers want an object
            return {**part, "input": normalize_tool_input(part.get("input"))}
        return part
    return repair(part)


def _repaired_parts(parts: list[dict[str, Any]], client_tools: set[str], repair: Repairer) -> list[dict[str, Any]]:
    return [_repaired_part(part, client_tools, repair) for part in parts]


def _store(session: Session, uids: list[str], client_tools: set[str], repair: Repairer) -> dict[str, list[dict[str, Any]]]:
    """Repair the stored rows under a lock (a client's result may land at the same moment:
    what it settled stays settled). Returns uid → the parts now stored."""
    stored: dict[str, list[dict[str, Any]]] = {}
    with transaction.atomic():
        for row in Message.objects.select_for_update().filter(session=session, uid__in=uids):
            parts = _repaired_parts(row.parts, client_tools, repair)
            if parts != row.parts:
                row.parts = parts
                row.save(update_fields=["parts", "updated_at"])
            stored[row.uid] = row.parts
    return stored


def _awaits_input(messages: list[UIMessage]) -> bool:
    """Some tool call has its input and no answer: only then does it matter which tools the
    client executes (every other state is repaired or kept whatever they are)."""
    return any(
        is_tool_part(part) and part.get("state") == "input-available"
        for message in messages if message["role"] == "assistant" for part in message.get("parts", [])
    )


async def repair_before_turn(agent: Any, session: Session, messages: list[UIMessage]) -> list[UIMessage]:
    """`messages` with interrupted tool parts repaired, stored and broadcast when any were."""
    # Most turns have no open call: they skip reading the client's tools.
    client_tools = set(await db_async(agent.client_tool_names)()) if _awaits_input(messages) else set()
    repair: Repairer = agent.repair_interrupted_tool_part
    broken = [
        m["id"] for m in messages
        if m["role"] == "assistant" and _repaired_parts(m.get("parts", []), client_tools, repair) != m.get("parts", [])
    ]
    if not broken:
        return messages
    stored = await db_async(_store)(session, broken, client_tools, repair)
    repaired = [{**m, "parts": stored[m["id"]]} if m["id"] in stored else m for m in messages]
    await broadcast.broadcast(session.pk, [frames.message_updated(m) for m in repaired if m["id"] in stored])
    return repaired
