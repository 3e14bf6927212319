"""What the turn engine needs of an agent: the few attributes and methods the runner,
recovery, RPC and the registry use. The concrete classes (agents/agent.py, chat_agent.py,
think_agent.py) satisfy these protocols without naming them, so the engine never imports the
agent API built on top of it.
"""
from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, runtime_checkable

from agents_app.storage.models import Agent as AgentRecord
from agents_app.storage.models import Session
from agents_app.providers.errors import ChatErrorClassification
from agents_app.turns.types import ChatErrorContext, ChatOptions, ChatResponse, ChatResponseResult, Connection

if TYPE_CHECKING:
    from agents_app.turns.recovery import ChatRecoveryContext


class HostedAgent(Protocol):
    """Any agent the engine serves: built per request from its session and database record."""

    title: str
    description: str
    session: Session
    record: AgentRecord
    # The connection whose RPC call is running, if any (rpc.py sets and clears it).
    caller: Connection | None

    def __init__(self, session: Session, record: AgentRecord) -> None: ...


@runtime_checkable
class ChatAgent(HostedAgent, Protocol):
    """An agent that answers chat turns (AIChatAgent and ThinkAgent): what runner.py and
    recovery.py call. `is_chat_agent(agent)` tells a chat agent from a plain one."""

    message_concurrency: Any
    merges_queued_user_messages: bool
    max_persisted_messages: int | None
    finish_reason_in_metadata: bool
    final_transcript_to_requester: bool
    chat_recovery: bool | dict[str, Any]

    def new_message_id(self) -> str: ...

    @classmethod
    def turn_session_annotations(cls) -> dict[str, Any]: ...

    def read_before_turn(self) -> None: ...

    async def on_chat_message(self, options: ChatOptions) -> ChatResponse: ...

    async def on_chat_response(self, result: ChatResponseResult) -> None: ...

    def classify_chat_error(self, error: BaseException | str, ctx: ChatErrorContext) -> ChatErrorClassification | None: ...

    def on_chat_error(self, error: BaseException, ctx: ChatErrorContext) -> BaseException: ...

    async def on_chat_recovery(self, ctx: ChatRecoveryContext) -> dict[str, bool] | None: ...

    def should_keep_recovering(self, ctx: ChatRecoveryContext) -> bool | Awaitable[bool]: ...

    async def on_chat_recovery_exhausted(self, ctx: ChatRecoveryContext, reason: str, terminal_message: str) -> None: ...

    async def broadcast_transcript(self) -> list[dict[str, Any]]: ...

    async def save_messages(self, messages: Any, *, request_id: str | None = None) -> Any: ...


# Whether instances of a class are chat agents, decided on the first one seen.
_chat_classes: dict[type, bool] = {}


def is_chat_agent(agent: object) -> TypeGuard[ChatAgent]:
    """`isinstance(agent, ChatAgent)`, checked once per class: a runtime protocol check looks
    up every member of the protocol (~90 µs on Python 3.11), and every turn asks."""
    cls = type(agent)
    known = _chat_classes.get(cls)
    if known is None:
        known = _chat_classes[cls] = isinstance(agent, ChatAgent)
    return known
