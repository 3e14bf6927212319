"""The stored transcript to a session's connections whose client did not build it itself:
after a submit is stored (the requester's client already shows its messages) and after a
turn's final frames (an `AIChatAgent` requester's client built the reply from the stream).
"""
from __future__ import annotations

from agents_app.protocol import frames
from agents_app.protocol.messages import UIMessage
from agents_app.storage import transcript
from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session
from agents_app.turns import broadcast
from agents_app.turns.agent_interface import ChatAgent
from agents_app.turns.types import Connection, TurnRequest

# The uid of the session's active leaf: whether a reply is still the conversation's last message.
_LEAF_UID = CompiledQuery(lambda pk: Session.objects.filter(pk=pk).values_list("active_leaf__uid"))


def spared_requester(request: TurnRequest, agent: ChatAgent | None) -> Connection | None:
    """The connection that need not be sent a finished turn's transcript: an `AIChatAgent`'s
    requester, whose client built the same list from the stream. A continuation's requester
    and a Think agent's are sent it like everyone else."""
    if request.origin is None or request.continuation or agent is None or agent.final_transcript_to_requester:
        return None
    return request.origin


async def send_to_others(session: Session, spared: Connection | None, *, reply: UIMessage | None = None) -> None:
    """The stored transcript to the session's connections but `spared`, unless nobody would
    receive it. Most chats have one tab, and the read grows with the conversation: with only
    the spared requester there, one row says whether its `reply` is still last; if not (a
    message was queued meanwhile), the requester needs the stored order too."""
    spared_channel = spared.channel_name if spared is not None else None
    if not await broadcast.anyone_else_listening(session.pk, spared_channel):
        if spared is None or reply is None or await db_async(_LEAF_UID.row)(session.pk) == (reply["id"],):
            return
    current = await db_async(transcript.transcript)(session)
    reply_still_last = reply is None or not current or current[-1]["id"] == reply["id"]
    exclude = (spared.id,) if spared is not None and reply_still_last else ()
    await broadcast.broadcast(session.pk, [frames.chat_messages(current)], exclude=exclude)
