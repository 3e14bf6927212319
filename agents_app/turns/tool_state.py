"""Client tool results and approval decisions applied to stored tool parts (protocol §5.5, §5.6).

First write wins: a part already settled is never overwritten. Every real change is persisted
and broadcast as cf_agent_message_updated; an opted-in result or decision then schedules the
continuation turn once every tool call of the message is answered. A result or decision that
changed nothing (unknown call, already answered — e.g. by another tab) schedules nothing.
"""
from __future__ import annotations

import asyncio
from typing import Any

from django.db import transaction

from agents_app.protocol import frames
from agents_app.protocol.inbound import ToolApproval, ToolResult
from agents_app.protocol.messages import UIMessage, is_tool_part, tool_name_of
from agents_app.turns import broadcast, continuation
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Message, Session, ToolGrant

DEFAULT_DENIAL_TEXT = "Tool execution denied by user"
_RESULT_STATES = frozenset({"input-available", "approval-requested", "approval-responded"})
_APPROVAL_STATES = frozenset({"input-available", "approval-requested"})
LOOKUP_ATTEMPTS = 10
LOOKUP_INTERVAL = 0.1


def _owner_of(session: Session, tool_call_id: str) -> Message | None:
    for message in session.messages.filter(role="assistant").order_by("-id"):
        if any(p.get("toolCallId") == tool_call_id for p in message.parts if is_tool_part(p)):
            return message
    return None


def _update_part(session: Session, tool_call_id: str, accepted: frozenset[str], change: Any) -> UIMessage | None:
    """Apply `change(part)` under a row lock; None when the part is missing or not in an
    accepted state (nothing is written then)."""
    with transaction.atomic():
        owner = _owner_of(session, tool_call_id)
        if owner is None:
            return None
        owner = Message.objects.select_for_update().get(pk=owner.pk)
        parts = [dict(p) for p in owner.parts]
        part = next(p for p in parts if p.get("toolCallId") == tool_call_id)
        if part.get("state") not in accepted:
            return None
        change(part)
        owner.parts = parts
        owner.save(update_fields=["parts", "updated_at"])
        return owner.as_ui_message()


async def _apply_with_retries(session: Session, tool_call_id: str, accepted: frozenset[str], change: Any) -> UIMessage | None:
    """Results can arrive just before the turn that asked for them has persisted its message."""
    for attempt in range(LOOKUP_ATTEMPTS):
        exists = await db_async(_owner_of)(session, tool_call_id)
        if exists is not None:
            return await db_async(_update_part)(session, tool_call_id, accepted, change)
        if attempt < LOOKUP_ATTEMPTS - 1:
            await asyncio.sleep(LOOKUP_INTERVAL)
    return None


async def apply_tool_result(session: Session, result: ToolResult) -> str | None:
    """Returns the request id of the continuation this result scheduled, if any."""
    if result.client_tools:
        await db_async(_remember_client_tools)(session, result.client_tools)

    def change(part: dict[str, Any]) -> None:
        if result.is_error:
            part.update(state="output-error", errorText=result.error_text or DEFAULT_DENIAL_TEXT)
            part.pop("output", None)
        else:
            part.update(state="output-available", output=result.output, preliminary=False)

    updated = await _apply_with_retries(session, result.tool_call_id, _RESULT_STATES, change)
    if updated is None:
        return None  # stray or duplicate (another tab answered first): nothing changed, no model call
    await broadcast.broadcast(session.pk, [frames.message_updated(updated)])
    return await continuation.after_tool_answer(session, wants_continuation=result.auto_continue, client_tools=result.client_tools)


async def apply_tool_approval(
    session: Session, approval: ToolApproval, *, always_allow: bool = False, for_agent: bool = False, reason: str = ""
) -> str | None:
    """Returns the request id of the continuation this decision scheduled, if any.

    `always_allow` with an approval also lets later calls of the same tool in this session
    run without asking (Session.allowed_tools); `for_agent` in every session of this agent
    for the session's owner (ToolGrant); the model loop reads both on every turn. A denial's
    `reason` is kept on the part's approval and reaches the model with the denial."""
    approved_tool: list[str] = []

    def change(part: dict[str, Any]) -> None:
        decided = {**(part.get("approval") or {}), "approved": approval.approved}
        decided.setdefault("id", approval.tool_call_id)
        if reason and not approval.approved:
            decided["reason"] = reason
        part["approval"] = decided
        part["state"] = "approval-responded" if approval.approved else "output-denied"
        approved_tool.append(tool_name_of(part))

    updated = await _apply_with_retries(session, approval.tool_call_id, _APPROVAL_STATES, change)
    if updated is None:
        return None  # stray or already decided: nothing changed, no model call
    if for_agent and approval.approved:
        await db_async(allow_tool_for_agent)(session, approved_tool[0])
    elif always_allow and approval.approved:
        await db_async(allow_tool_always)(session, approved_tool[0])
    await broadcast.broadcast(session.pk, [frames.message_updated(updated)])
    return await continuation.after_tool_answer(session, wants_continuation=approval.auto_continue, client_tools=None)


def allow_tool_always(session: Session, tool_name: str) -> None:
    with transaction.atomic():
        locked = Session.objects.select_for_update().get(pk=session.pk)
        if tool_name not in locked.allowed_tools:
            locked.allowed_tools = [*locked.allowed_tools, tool_name]
            locked.save(update_fields=["allowed_tools", "updated_at"])


def allow_tool_for_agent(session: Session, tool_name: str) -> None:
    if session.owner_id is not None:
        ToolGrant.objects.get_or_create(user_id=session.owner_id, agent=session.agent.slug, tool=tool_name)


def _remember_client_tools(session: Session, client_tools: list[dict[str, Any]]) -> None:
    with transaction.atomic():
        locked = Session.objects.select_for_update().get(pk=session.pk)
        locked.request_context = {**(locked.request_context or {}), "lastClientTools": client_tools}
        locked.save(update_fields=["request_context", "updated_at"])
