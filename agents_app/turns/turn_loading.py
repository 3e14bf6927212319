"""What a turn reads as it takes its session's lock: its agent, and the context it answers.

Both are read on the database thread in the call that takes the lock (each call before the
first token is a thread hand-off both ways, ~0.5 ms on an otherwise idle server). A chat
request admitted on an idle session goes one step further: its admission's transaction takes
the lock (in the write that stores its messages) and the same call then loads the turn
(`load_after_admission`) over the session's row that admission read, so a chat's first token
waits for one call less and for no read of the agent's.
"""
from __future__ import annotations

from dataclasses import dataclass

from agents_app.gateway import scope as gateway_scope
from agents_app.protocol.messages import UIMessage
from agents_app.storage import client_messages, row_writes, transcript
from agents_app.storage.models import Session, Turn
from agents_app.testing import faults
from agents_app.turns import concurrency
from agents_app.turns.agent_interface import ChatAgent, is_chat_agent
from agents_app.turns.instances import fresh_agent, load_agent
from agents_app.turns.types import TurnRequest

# The session the turn runs on and the transcript the model answers.
TurnContext = tuple[Session, list[UIMessage]]


@dataclass
class Loaded:
    """What a turn reads in the round trip that takes its session's lock."""

    agent: ChatAgent
    caller: gateway_scope.Caller  # who the turn's model calls are for
    context: TurnContext | None  # None: read once the concurrency policy and saved messages allow


@dataclass
class TakenAtAdmission:
    """The turn loaded by its admission's call, which took the lock, or what failed on the
    way: the runner raises that where it would have taken the lock itself, and ends the
    turn as it would have then."""

    loaded: Loaded | None
    error: Exception | None = None

    def result(self) -> Loaded:
        if self.error is not None:
            raise self.error
        assert self.loaded is not None
        return self.loaded


def load_for_turn(request: TurnRequest, turn: Turn, session: Session | None = None, admitted: list[UIMessage] | None = None) -> Loaded:
    """The turn's agent over the session as it is now that the lock is held, and, when
    nothing is to happen before the turn reads its context (no messages to save first, no
    concurrency policy to apply), that context too. `session`: the session's row (with its
    agent's) as the turn's admission read it, locked, when it took the lock, with what the
    agent class reads before every turn; `admitted`: the transcript as that admission left
    it. Neither is read again then."""
    faults.point("agent_load")
    agent = fresh_agent(request.session_id) if session is None else load_agent(session)
    if not is_chat_agent(agent):
        raise TypeError(f"{type(agent).__name__} is not a chat agent")
    context = None
    if request.new_messages is None and policy_at_start(agent, turn) is None:
        context = load_turn_context(request, agent.session, admitted)
        agent.read_before_turn()
    return Loaded(agent, gateway_scope.caller_of(agent.session), context)


def load_after_admission(request: TurnRequest, turn: Turn, session: Session, admitted: list[UIMessage] | None) -> TakenAtAdmission:
    """On the database thread, right after `turn`'s admission committed having taken its
    session's lock: load the turn over `session` and `admitted` (as in `load_for_turn`).
    Never raises: a failure here is the turn's, not its admission's (the runner ends the
    turn and releases the lock)."""
    try:
        faults.point("lock_acquire")
        return TakenAtAdmission(load_for_turn(request, turn, session, admitted))
    except Exception as error:
        return TakenAtAdmission(None, error)


def policy_at_start(agent: ChatAgent, turn: Turn) -> concurrency.Concurrency | None:
    """The message concurrency policy with something to do as this turn starts, if any: only
    a WebSocket submit is subject to it, and `queue` and `drop` act at admission only."""
    if not (turn.trigger == "submit-message" and turn.source == Turn.Source.WEBSOCKET):
        return None
    policy = concurrency.Concurrency.parse(agent.message_concurrency)
    return policy if policy.supersedes else None


def store_then_load(request: TurnRequest, session: Session, incoming: list[UIMessage]) -> TurnContext:
    """A turn's new messages stored as a client's list is (new ones after the active leaf),
    then its context as `load_turn_context` reads it."""
    client_messages.upsert(session, incoming, move_leaf=False)
    return load_turn_context(request, session)


def load_turn_context(request: TurnRequest, session: Session, admitted: list[UIMessage] | None = None) -> TurnContext:
    """The request's context recorded on `session` (the agent's, loaded when the turn took the
    lock: only turns, under that lock, change it) and the transcript the model answers
    (`admitted`, when the turn's admission gave it)."""
    context = dict(session.request_context or {})
    if request.client_tools is not None:
        context["lastClientTools"] = request.client_tools
    else:
        context.pop("lastClientTools", None)
    if request.body is not None:
        context["lastBody"] = request.body
    else:
        context.pop("lastBody", None)
    if context != session.request_context:  # a new body, as most turns bring: not a queryset built each time
        row_writes.update(Session, {"pk": session.pk}, request_context=context)
        session.request_context = context
    return session, admitted if admitted is not None else transcript.transcript(session)
