"""The WebSocket endpoint of an agent instance: `/agents/<agent>/<name>`.

Frames in are parsed by `protocol.inbound` and handed to the runtime; frames out come from
the runtime through the session's channel-layer group. This consumer only routes: it owns
no turn, so a closing socket never stops one.
"""
from __future__ import annotations

import inspect
import json
import logging
import uuid
from dataclasses import replace
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from agents_app import limits
from agents_app.mcp import manager as mcp_manager
from agents_app.protocol import frames
from agents_app.protocol.inbound import (
    AppMessage,
    CancelRequest,
    ChatRequest,
    ClearRequest,
    ProtocolError,
    ResumeAck,
    ResumeRequest,
    RpcCall,
    SetMessages,
    StateUpdate,
    ToolApproval,
    ToolResult,
    parse_frame,
)
from agents_app.turns import chat, recovery, runner, tool_state
from agents_app.agents.agent import Agent, ReadonlyConnection
from agents_app.agents.chat_agent import AIChatAgent
from agents_app.agents.think_agent import ThinkAgent
from agents_app.turns.broadcast import session_group
from agents_app.turns.instances import InvalidSessionName, UnknownAgent, fresh_agent, load_agent, resolve_session
from agents_app.turns.resume import ConnectionStreams, StreamEventsMixin
from agents_app.turns.rpc import invoke
from agents_app.turns import background
from agents_app.turns.types import Connection, ConnectionContext
from agents_app.storage import query_count, transcript
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session
from agents_app.testing import timeline
from agents_app.transport.auth import query_params

logger = logging.getLogger(__name__)

# Close codes in 4000–4999 stop the official client from reconnecting (protocol §1.6).
CLOSE_UNAUTHENTICATED = 4001
CLOSE_UNKNOWN_AGENT = 4004
CLOSE_INVALID_NAME = 4400
CLOSE_LIMITED = 4429
# What a Think agent's connection gets while it is deciding whether to resume a stream.
_CHAT_UPDATES = frozenset({frames.CHAT_MESSAGES, frames.MESSAGE_UPDATED})


def takes_context(on_connect: Any) -> bool:
    """Whether an `on_connect` override takes `(connection, ctx)` (older ones take only the
    connection)."""
    parameters = list(inspect.signature(on_connect).parameters.values())
    return any(p.kind is p.VAR_POSITIONAL for p in parameters) or len(parameters) >= 2


def _open_agent(segment: str, name: str, user: Any) -> Agent:
    """The connection's session (created on first use, within the creation limit) and its
    first agent, built over the row just read rather than read again."""
    return load_agent(resolve_session(segment, name, user, limit_creation=True))


class AgentConsumer(StreamEventsMixin, AsyncWebsocketConsumer):
    session: Session
    connection: Connection
    streams: ConnectionStreams
    chat_updates_while_resuming: bool

    async def connect(self) -> None:
        self.frame_rate = limits.FrameRate()
        route = self.scope["url_route"]["kwargs"]
        self.segment, self.instance_name = route["agent"], route["name"]
        user = self.scope.get("user")
        authenticated = user is not None and user.is_authenticated
        await self.accept()
        if not authenticated and not settings.AGENTS_ALLOW_ANONYMOUS:
            await self._refuse("Authentication required: log in or pass ?token=<api token>.", CLOSE_UNAUTHENTICATED)
            return
        try:
            agent = await db_async(_open_agent)(self.segment, self.instance_name, user if authenticated else None)
        except UnknownAgent:
            await self._refuse(f"Unknown agent {self.segment!r}.", CLOSE_UNKNOWN_AGENT)
            return
        except InvalidSessionName as error:
            await self._refuse(str(error), CLOSE_INVALID_NAME)
            return
        except limits.LimitReached as refusal:
            await self._refuse(str(refusal), CLOSE_LIMITED)
            return
        self.session = agent.session
        self.chat_updates_while_resuming = isinstance(agent, ThinkAgent)
        query = query_params(self.scope)
        connection = Connection(
            id=query.get("_pk") or str(uuid.uuid4()),
            channel_name=self.channel_name,
            user_id=user.pk if authenticated else None,
            query=query,
        )
        self.connection = replace(
            connection,
            readonly=agent.is_readonly(connection),
            protocol=agent.should_send_protocol_messages(connection),
        )
        self.streams = ConnectionStreams(self.session.pk, self.send_frames)
        await self.channel_layer.group_add(session_group(self.session.pk), self.channel_name)
        await self._send_chat_connect_frames(agent)
        if self.connection.protocol:
            connect_frames = []
            if agent.send_identity_on_connect:
                connect_frames.append(frames.identity(self.instance_name, self.segment, state_follows=agent.has_state))
            if agent.has_state:
                connect_frames.append(frames.state(agent.state))
            connect_frames.append(await mcp_manager.state_frame(self.session.pk))
            await self.send_frames(connect_frames)
        await mcp_manager.ensure_connected(self.session.pk)  # reconnects after a restart; state frames follow
        if takes_context(agent.on_connect):
            await agent.on_connect(self.connection, self._connection_context(user if authenticated else None, query))
        else:
            await agent.on_connect(self.connection)

    def _connection_context(self, user: Any, query: dict[str, str]) -> ConnectionContext:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self.scope.get("headers", [])}
        client = self.scope.get("client")
        return ConnectionContext(
            path=self.scope.get("path", ""), headers=headers, query=query, user=user,
            client=f"{client[0]}:{client[1]}" if client else None,
        )

    async def _send_chat_connect_frames(self, agent: Agent) -> None:
        if not isinstance(agent, AIChatAgent):
            return
        await self.streams.on_connect()
        if isinstance(agent, ThinkAgent) and self.streams.offered is None:
            # Think pushes the transcript unless a replay is about to rebuild the message.
            await self.send_frames([frames.chat_messages(await db_async(transcript.transcript)(self.session))])
        recovering = recovery.recovering_frame(self.session)
        if recovering is not None and self.streams.offered is None and not self.streams.parked:
            await self.send_frames([recovering])

    async def _refuse(self, message: str, code: int) -> None:
        await self.send_frames([frames.error(message)])
        await self.close(code=code)

    async def _agent(self) -> Agent:
        """A fresh agent over the current session row (state may change in other processes)."""
        agent = await db_async(fresh_agent)(self.session.pk)
        self.session = agent.session
        return agent

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "connection"):
            return
        self.streams.close()
        await self.channel_layer.group_discard(session_group(self.session.pk), self.channel_name)
        agent = await self._agent()
        await agent.on_close(self.connection)

    async def send_frames(self, outgoing: list[frames.Frame]) -> None:
        for frame in outgoing:
            await self.send(text_data=json.dumps(frame, separators=(",", ":"), ensure_ascii=False))

    # -- frames in ---------------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.frame_rate.allow():
            await self.send_frames([frames.error("Too many frames: slow down (see AGENTS_MAX_FRAMES_PER_SECOND).")])
            return
        if text_data is None:
            await self.send_frames([frames.error("Binary frames are not supported; send JSON text frames.")])
            return
        if len(text_data.encode()) > settings.AGENTS_MAX_FRAME_BYTES:
            await self.send_frames(
                [frames.error(f"Frame too large: the limit is {settings.AGENTS_MAX_FRAME_BYTES} bytes.")]
            )
            return
        try:
            frame = parse_frame(text_data)
        except ProtocolError as error:
            await self._report(error)
            return
        try:
            await self._dispatch(frame)
        except Exception:  # one bad frame must not take the connection down
            logger.exception("frame handling failed on %s/%s", self.segment, self.instance_name)
            await self.send_frames([frames.error("The server could not process that frame.")])

    async def _report(self, error: ProtocolError) -> None:
        if error.request_id:
            await self.send_frames([frames.chat_response(error.request_id, str(error), done=True, error=True)])
        else:
            await self.send_frames([frames.error(str(error), frame_type=error.frame_type)])

    async def _dispatch(self, frame: Any) -> None:
        match frame:
            case ChatRequest(request_id=request_id):
                timeline.mark(request_id, "received")
                self.streams.own(request_id)
                with query_count.admission(request_id):
                    await chat.submit(self.session, self.connection, frame)
            case CancelRequest(request_id=request_id):
                await runner.cancel(self.session.pk, request_id)
            case ClearRequest():
                await chat.clear(self.session, self.connection)
            case SetMessages(messages=messages):
                agent = await self._agent()
                if not isinstance(agent, ThinkAgent):  # Think is server-authoritative (§5.4)
                    await chat.set_messages(self.session, self.connection, messages)
            case ToolResult():
                self.streams.await_continuation(await tool_state.apply_tool_result(self.session, frame))
            case ToolApproval():
                self.streams.await_continuation(await tool_state.apply_tool_approval(self.session, frame))
            case ResumeRequest(probe_id=probe_id):
                await self.streams.on_probe(probe_id)
            case ResumeAck(request_id=request_id):
                await self.streams.on_ack(request_id)
            case StateUpdate(state=state):
                await self._apply_state(state)
            case RpcCall():
                await invoke(await self._agent(), frame, self.connection, self.send_frames)
            case AppMessage():
                # A handler may stream for a long time (connection.send per chunk): it runs
                # beside the socket's receive loop, which keeps taking frames meanwhile.
                background.keep_running(self._on_message(frame), f"on_message on {self.segment}/{self.instance_name}")

    async def _on_message(self, frame: AppMessage) -> None:
        try:
            agent = await self._agent()
            await self.send_frames(await agent.on_message(self.connection, frame) or [])
        except Exception:
            logger.exception("on_message failed on %s/%s", self.segment, self.instance_name)
            await self.send_frames([frames.error("The server could not process that frame.")])

    async def _apply_state(self, state: Any) -> None:
        agent = await self._agent()
        try:
            await agent.apply_client_state(state, self.connection)
        except ReadonlyConnection as error:
            await self.send_frames([frames.state_error(str(error))])
        except Exception:
            logger.info("state update rejected on %s/%s", self.segment, self.instance_name, exc_info=True)
            await self.send_frames([frames.state_error("State update rejected")])

    # -- frames out (channel-layer group messages) ------------------------------------------
    async def agent_direct(self, message: dict[str, Any]) -> None:
        """`Connection.send` from agent code, in any task or process."""
        await self.send(text_data=message["text"])

    def _reaches_while_resuming(self, outgoing: list[frames.Frame]) -> bool:
        """A connection offered a stream and not yet acknowledging it gets none of the chat's
        broadcasts (ai-chat), except on a Think agent its transcripts and message updates
        (think.md: only stream frames wait for the ACK there)."""
        return self.chat_updates_while_resuming and all(f.get("type") in _CHAT_UPDATES for f in outgoing)

    async def agent_frames(self, message: dict[str, Any]) -> None:
        if self.connection.id in message["exclude"]:
            return
        outgoing = message["frames"]
        if message["skip_pending_resume"] and self.streams.offered is not None and not self._reaches_while_resuming(outgoing):
            return
        if not self.connection.protocol:
            outgoing = [f for f in outgoing if f.get("type") != frames.STATE]
        await self.send_frames(outgoing)
