"""Starting turns from code, Celery and the command line: `/agents/<agent>/<name>` for a user
(or the anonymous namespace), a user message, the same runner as every other turn."""
from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from agents_app.protocol.messages import user_text_message
from agents_app.turns.agent_interface import ChatAgent, is_chat_agent
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.turns.types import TurnResult


def _agent_for(segment: str, name: str, username: str | None) -> ChatAgent:
    user = get_user_model().objects.get(username=username) if username else None
    agent = load_agent(resolve_session(segment, name, user))
    if not is_chat_agent(agent):
        raise TypeError(f"{segment} is not a chat agent")
    return agent


async def send_user_message(
    segment: str, name: str, text: str, *, username: str | None = None, request_id: str | None = None
) -> TurnResult:
    """With a `request_id` (e.g. a Celery task id) a repeated delivery neither stores the
    message twice nor runs the turn twice."""
    agent = await sync_to_async(_agent_for)(segment, name, username)
    message_id = f"user_{request_id}" if request_id else None
    return await agent.save_messages([user_text_message(text, message_id)], request_id=request_id)
