"""The release of connections parked until a session's turns have settled, after a turn's
final frames.
"""
from __future__ import annotations

from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Turn
from agents_app.turns import broadcast

# Another turn of the session accepted and not yet streaming (asked at the end of every turn).
_OTHER_PRE_STREAM = CompiledQuery(
    lambda pk, request_id: Turn.objects.filter(session_id=pk, status__in=Turn.PRE_STREAM).exclude(request_id=request_id).values_list("pk")[:1]
)


async def settle(turn: Turn, *, streamed: bool) -> None:
    """Release the connections parked until this turn ended, telling them whether another
    turn of the session is still waiting to stream."""
    remaining = await db_async(_OTHER_PRE_STREAM.row)(turn.session_id, turn.request_id) is not None
    await broadcast.turn_settled(turn.session_id, turn.request_id, streamed=streamed, pre_stream_remaining=remaining)
