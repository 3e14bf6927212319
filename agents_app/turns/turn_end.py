"""What a session's connections learn after a turn's final frames: the stored transcript,
sent to those whose client did not already build it from the stream, and the release of
connections parked until the session's turns have settled.
"""
from __future__ import annotations

from agents_app.protocol import frames
from agents_app.protocol.messages import UIMessage
from agents_app.storage import transcript
from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session, Turn
from agents_app.turns import broadcast
from agents_app.turns.agent_interface import ChatAgent
from agents_app.turns.types import Connection, TurnRequest

# The uid of the session's active leaf: whether a reply is still the conversation's last message.
_LEAF_UID = CompiledQuery(lambda pk: Session.objects.filter(pk=pk).values_list("active_leaf__uid"))

# Another turn of the session accepted and not yet streaming (asked at the end of every turn).
_OTHER_PRE_STREAM = CompiledQuery(
    lambda pk, request_id: Turn.objects.filter(session_id=pk, status__in=Turn.PRE_STREAM).exclude(request_id=request_id).values_list("pk")[:1]
)


def spared_requester(request: TurnRequest, agent: ChatAgent | None) -> Connection | None:
    """The connection that need not be sent the final transcript: an `AIChatAgent`'s
    requester, whose client built the same list from the stream. A continuation's requester
    and a Think agent's are sent it like everyone else."""
    if request.origin is None or request.continuation or agent is None or agent.final_transcript_to_requester:
        return None
    return request.origin


async def deliver_transcript(session: Session, reply: UIMessage | None, spared: Connection | None) -> None:
    """The stored transcript to the session's connections but `spared`, unless nobody would
    receive it. Most chats have one tab, and the read grows with the conversation: with only
    the spared requester there, one row says whether its reply is still last; if not (a
    message was queued meanwhile), it needs the stored order too."""
    spared_channel = spared.channel_name if spared is not None else None
    if not await broadcast.anyone_else_listening(session.pk, spared_channel):
        if spared is None or reply is None or await db_async(_LEAF_UID.row)(session.pk) == (reply["id"],):
            return
    current = await db_async(transcript.transcript)(session)
    reply_still_last = reply is None or not current or current[-1]["id"] == reply["id"]
    exclude = (spared.id,) if spared is not None and reply_still_last else ()
    await broadcast.broadcast(session.pk, [frames.chat_messages(current)], exclude=exclude)


async def settle(turn: Turn, *, streamed: bool) -> None:
    """Release the connections parked until this turn ended, telling them whether another
    turn of the session is still waiting to stream."""
    remaining = await db_async(_OTHER_PRE_STREAM.row)(turn.session_id, turn.request_id) is not None
    await broadcast.turn_settled(turn.session_id, turn.request_id, streamed=streamed, pre_stream_remaining=remaining)
