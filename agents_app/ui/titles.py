"""A short title for a conversation from its first exchange.

After the first answer (never before it: this runs once the turn is over) one model call
through the gateway asks for a title; its call is logged under its own request id
(`title-<turn>`), so the answer's token counts stay the answer's. When titles by model are
off (AGENTS_CHAT_TITLES=words), the model fails or answers nothing usable, the title is the
first words of the first message. A title is only ever set on an untitled session, so a
rename stays.
"""
from __future__ import annotations

import logging
import re

from django.conf import settings

from agents_app.gateway import scope as gateway_scope
from agents_app.protocol.messages import UIMessage, text_of
from agents_app.gateway.steps import StepStream, text_ids
from agents_app.providers.openai_chat import ModelError, default_model, make_client
from agents_app.turns import broadcast
from agents_app.turns.instances import load_agent, session_with_agent
from agents_app.turns.turn_listeners import on_turn_finished
from agents_app.turns.types import TurnResult
from agents_app.storage import row_writes, transcript
from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session

logger = logging.getLogger(__name__)

MAX_TITLE_CHARS = 60
FALLBACK_WORDS = 6
INSTRUCTION = (
    "Write a title of at most six words for the conversation below. "
    "Answer with the title only: no quotes, no final full stop."
)


def first_words(text: str) -> str:
    words = text.split()
    title = " ".join(words[:FALLBACK_WORDS])
    if len(words) > FALLBACK_WORDS:
        title += "…"
    return title[:MAX_TITLE_CHARS]


def clean_title(raw: str) -> str:
    line = next((line for line in raw.strip().splitlines() if line.strip()), "")
    line = re.sub(r"^(title\s*:\s*)", "", line.strip(), flags=re.IGNORECASE)
    return line.strip(" \"'`*#").rstrip(".").strip()[:MAX_TITLE_CHARS]


def _first_exchange(session_id: int) -> tuple[str, str, str] | None:
    """(question, answer, model) when the session is untitled and has its first answer."""
    session = session_with_agent(session_id)
    if session is None or session.title:
        return None
    messages: list[UIMessage] = transcript.transcript(session)
    first = next((m for m in messages if m["role"] == "user"), None)
    files = [str(p.get("filename", "")) for p in (first or {}).get("parts", []) if p.get("type") == "file"]
    question = (text_of(first) or ", ".join(f for f in files if f)) if first else ""
    answer = next((text_of(m) for m in messages if m["role"] == "assistant"), "")
    if not question:
        return None
    return question, answer, _title_model(session) if settings.AGENTS_CHAT_TITLES == "model" else ""


def _title_model(session: Session) -> str:
    if settings.AGENTS_TITLE_MODEL:
        return settings.AGENTS_TITLE_MODEL
    agent = load_agent(session)  # only when a model writes the title: an agent costs its construction
    return agent.get_model() if hasattr(agent, "get_model") else default_model()


async def _ask_model(question: str, answer: str, model: str) -> str:
    prompt = f"User: {question[:2000]}\n\nAssistant: {answer[:2000]}"
    messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": prompt}]
    pieces: list[str] = []
    async with make_client() as client:
        async for chunk in StepStream(client, model=model, messages=messages, part_ids=text_ids("title"), send_reasoning=False):
            if chunk.get("type") == "text-delta":
                pieces.append(chunk.get("delta", ""))
    return clean_title("".join(pieces))


def _save(session_id: int, title: str) -> bool:
    return row_writes.update(Session, {"pk": session_id, "title": ""}, title=title) == 1


# After every turn: a named session (all but a new one) is done with one cheap read.
_TITLE = CompiledQuery(lambda pk: Session.objects.filter(pk=pk).values_list("title"))


async def name_conversation(session_id: int, request_id: str) -> str | None:
    """The title given to the session, or None when it already had one."""
    named = await db_async(_TITLE.row)(session_id)
    if named is None or named[0]:
        return None
    exchange = await db_async(_first_exchange)(session_id)
    if exchange is None:
        return None
    question, answer, model = exchange
    title = ""
    if settings.AGENTS_CHAT_TITLES == "model" and answer:
        try:
            async with gateway_scope.for_turn(session_id, f"title-{request_id}"[:64], None):
                title = await _ask_model(question, answer, model)
        except ModelError as error:
            logger.info("no model title for session %s: %s", session_id, error)
    title = title or first_words(question)
    if not await db_async(_save)(session_id, title):
        return None
    await broadcast.session_changed(session_id)
    return title


@on_turn_finished
async def title_after_turn(session_id: int, result: TurnResult) -> None:
    if result.status == "completed":
        await name_conversation(session_id, result.request_id)
