"""Compaction (think.md §6.4): non-destructive summary overlays.

When a conversation grows past the agent's token threshold (or on request), the model
summarises a middle range of the path; the overlay stores that summary over the range. The
model then sees the summary in place of the range, while every original message stays
stored and visible (get-messages marks them `metadata.compaction`). Deleting the overlay
undoes it. Iterative compaction keeps one growing overlay per branch: a new overlay starts
where the earliest overlay on the path starts.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from agents_app.protocol.messages import UIMessage, text_of
from agents_app.gateway.text import generate_text
from agents_app.think.context_blocks import estimate_tokens
from agents_app.think.context_window import input_budget
from agents_app.storage import transcript
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Compaction, Message, Session
from agents_app.storage.overlays import apply_overlays, overlays_on_path

if TYPE_CHECKING:
    from agents_app.think.host import ThinkHost

MESSAGE_OVERHEAD_TOKENS = 4
SUMMARY_INSTRUCTIONS = (
    "Summarise the conversation excerpt below for your own later use. Use the sections "
    "Topic, Key Points, Current State and Open Items. Keep names, numbers, decisions and "
    "anything the user asked you to remember. Be concise: at most a quarter of its length."
)


def estimate_messages_tokens(messages: list[UIMessage]) -> int:
    return sum(estimate_tokens(text_of(m)) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def _choose_range(messages: list[UIMessage], session: Session, protect_head: int, keep_tail: int) -> tuple[str, str] | None:
    """The range to summarise: after the protected head, before the kept tail, starting at
    the earliest existing overlay on the path so overlays grow instead of stacking."""
    if len(messages) <= protect_head + keep_tail:
        return None
    start_index, end_index = protect_head, len(messages) - keep_tail - 1
    existing = overlays_on_path(session, [m["id"] for m in messages])
    for overlay in existing:
        position = next(i for i, m in enumerate(messages) if m["id"] == overlay.from_uid)
        start_index = min(start_index, position)
    if end_index <= start_index:
        return None
    return messages[start_index]["id"], messages[end_index]["id"]


def _excerpts(messages: list[UIMessage], budget: int) -> list[str]:
    """The messages as transcript lines, packed into pieces of at most `budget` estimated
    tokens each (a single line longer than that is cut)."""
    pieces: list[list[str]] = [[]]
    used = 0
    for message in messages:
        text = text_of(message)
        if not text:
            continue
        line = f"{message['role'].upper()}: {text}"
        cost = estimate_tokens(line)
        if cost > budget:
            line = line[:budget]
            cost = estimate_tokens(line)
        if used + cost > budget and pieces[-1]:
            pieces.append([])
            used = 0
        pieces[-1].append(line)
        used += cost
    return ["\n\n".join(piece) for piece in pieces if piece]


async def _summary_of(agent: ThinkHost, prompt: str) -> str:
    summary = (await generate_text(prompt, model=agent.get_model())).text.strip()
    if not summary:
        raise RuntimeError("The model returned an empty summary.")
    return summary


async def summarize(agent: ThinkHost, messages: list[UIMessage]) -> str:
    """Ask the agent's model for a summary of `messages` (an earlier summary among them is
    folded into the new one). A range too long for one request is summarised piece by piece,
    each request carrying the summary so far, so no request exceeds the model's window."""
    budget = input_budget(agent.get_model(), agent) // 2
    summary = ""
    for excerpt in _excerpts(messages, budget):
        earlier = f"Summary of the conversation before this excerpt:\n{summary}\n\n" if summary else ""
        summary = await _summary_of(agent, f"{SUMMARY_INSTRUCTIONS}\n\n---\n{earlier}{excerpt}")
    if not summary:
        raise RuntimeError("There is nothing to summarise.")
    return summary


async def compact(agent: ThinkHost) -> Compaction | None:
    """Summarise the middle of the active path into an overlay; None when it is too short."""
    session = agent.session
    messages = await db_async(transcript.transcript)(session)
    bounds = await db_async(_choose_range)(messages, session, agent.compaction_protect_head, agent.compaction_keep_tail)
    if bounds is None:
        return None
    first, last = bounds
    uids = [m["id"] for m in messages]
    covered = messages[uids.index(first) : uids.index(last) + 1]
    summary = await summarize(agent, await db_async(apply_overlays)(session, covered))

    def store() -> Compaction:
        by_uid = dict(Message.objects.filter(session=session, uid__in=[first, last]).values_list("uid", "pk"))
        return Compaction.objects.create(
            session=session,
            from_message_id=by_uid[first],
            to_message_id=by_uid[last],
            summary=summary,
            tokens_before=estimate_messages_tokens(covered),
        )

    return await db_async(store)()


def undo(session: Session, compaction_id: int) -> bool:
    deleted, _ = Compaction.objects.filter(session=session, pk=compaction_id).delete()
    return bool(deleted)
