"""Frames to the connections of a session, from any process, through the channel layer.

Channels groups cannot exclude members, so every envelope says who should drop it
(`exclude`, `skip_pending_resume`) and each consumer applies that to itself. Stream frames
carry their sequence number so a consumer replaying from storage can stitch the live tail
without losing or duplicating a chunk.
"""
from __future__ import annotations

from typing import Any

from channels.layers import get_channel_layer

from agents_app.protocol.frames import Frame


def session_group(session_id: int) -> str:
    return f"agent-session.{session_id}"


async def _group_send(session_id: int, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    await layer.group_send(session_group(session_id), message)


async def broadcast(
    session_id: int,
    frames: list[Frame],
    *,
    exclude: tuple[str, ...] = (),
    skip_pending_resume: bool = True,
) -> None:
    """Send frames to every connection of the session except `exclude` (connection ids)."""
    await _group_send(
        session_id,
        {"type": "agent.frames", "frames": frames, "exclude": list(exclude), "skip_pending_resume": skip_pending_resume},
    )


async def anyone_else_listening(session_id: int, besides: str | None) -> bool:
    """Whether a connection other than channel `besides` (the requester's) is in the session's
    group. Most chats have one tab: frames only for the others, and the database reads that
    would fill them, are skipped when nobody else is there. A connection that joins after
    this answer reads the session afresh when it connects. A layer that cannot tell says yes."""
    layer = get_channel_layer()
    members = getattr(layer, "group_members", None)
    if members is None:
        return True
    return any(channel != besides for channel in await members(session_group(session_id)))


async def publish_stream(session_id: int, request_id: str, sequenced: list[tuple[int, Frame]]) -> None:
    """Live chunk frames of a turn's stream, each with its sequence number."""
    await _group_send(
        session_id,
        {"type": "agent.stream", "request_id": request_id, "frames": [[seq, frame] for seq, frame in sequenced]},
    )


async def end_stream(session_id: int, request_id: str, final_frames: list[Frame], *, chunk_total: int) -> None:
    """The terminal frames of a turn's stream (done, error). Sent only once the turn's final
    status is stored: a connection that still read the stream as live is then sure to be in
    the group for this message. `chunk_total` lets a connection that missed the last chunks
    (they were broadcast before it joined) fetch them from the chunk log before the end."""
    await _group_send(
        session_id,
        {"type": "agent.stream_end", "request_id": request_id, "frames": final_frames, "chunk_total": chunk_total},
    )


async def stream_started(session_id: int, request_id: str) -> None:
    """Parked and continuation-awaiting connections now get cf_agent_stream_resuming."""
    await _group_send(session_id, {"type": "agent.stream_started", "request_id": request_id})


async def turn_settled(session_id: int, request_id: str, *, streamed: bool, pre_stream_remaining: bool) -> None:
    """Parked connections are released with a bare resume-none when nothing else is coming."""
    await _group_send(
        session_id,
        {
            "type": "agent.turn_settled",
            "request_id": request_id,
            "streamed": streamed,
            "pre_stream_remaining": pre_stream_remaining,
        },
    )


async def send_to_channel(channel_name: str, frames: list[Frame]) -> None:
    layer = get_channel_layer()
    assert layer is not None
    await layer.send(channel_name, {"type": "agent.frames", "frames": frames, "exclude": [], "skip_pending_resume": False})


async def release_parked(session_id: int) -> None:
    """After a clear: connections waiting for a stream get a bare resume-none."""
    await _group_send(session_id, {"type": "agent.release_parked"})


async def session_changed(session_id: int) -> None:
    """The session's title or the chat page's queue changed (see StreamEventsMixin)."""
    await _group_send(session_id, {"type": "agent.session_changed"})
