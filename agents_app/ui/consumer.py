"""The chat page's socket (htmx ws extension): the same session group, the same resume
logic and the same turn path as the protocol consumer, but it speaks HTML fragments.

The page's composer sends over HTTP (views.send: files, first message); the socket takes
`{"action": "send", "message": "..."}` too, `stop`, `approve` (with `scope`:
once, chat or agent) / `reject` (with the `reason` the model reads), `regenerate` (with an optional `model` from the menu), `edit`, `switch` and
`tool_result` (a browser tool's output); decisions and results go through the same runtime
functions as cf_agent_tool_approval / cf_agent_tool_result. The socket answers with out-of-band swaps: the in-flight assistant message re-rendered per batch of
frames, and the whole conversation when a turn's transcript is broadcast.
"""
from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe

from agents_app.protocol import frames, json_safety
from agents_app.protocol.inbound import ChatRequest, ToolApproval, ToolResult
from agents_app.protocol.message_builder import MessageBuilder
from agents_app.protocol.messages import UIMessage
from agents_app.turns import broadcast, chat, tool_state
from agents_app.turns.broadcast import session_group
from agents_app.turns.resume import ConnectionStreams, StreamEventsMixin
from agents_app.turns.types import Connection, new_request_id
from agents_app.storage import transcript
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session
from agents_app.ui import sending
from agents_app.ui.message_stats import model_choices
from agents_app.ui.rendering import render_conversation, render_message_html, render_queue

MAX_DENIAL_REASON = 500

logger = logging.getLogger(__name__)


class ChatPageConsumer(StreamEventsMixin, AsyncWebsocketConsumer):
    session: Session

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()
            return
        route = self.scope["url_route"]["kwargs"]
        # Only an existing conversation: a fresh chat is stored by its first message (views.send).
        session = await db_async(
            Session.objects.select_related("agent").filter(agent__slug=route["agent"], name=route["name"], owner=user).first
        )()
        if session is None:
            await self.close()
            return
        self.session = session
        self.shown_title: str | None = None  # the title may change between page load and connect
        self.connection = Connection(id=f"ui-{uuid.uuid4()}", channel_name=self.channel_name, user_id=user.pk)
        self.streaming: dict[str, MessageBuilder] = {}
        self.streams = ConnectionStreams(self.session.pk, self.render_frames)
        await self.accept()
        await self.channel_layer.group_add(session_group(self.session.pk), self.channel_name)
        # What changed between rendering the page and joining the group (a turn that ended
        # meanwhile, e.g. right after the first message loaded the page) is drawn now.
        current = await db_async(transcript.transcript)(self.session)
        await self._send_html(await self._conversation_html(current) + await db_async(self._session_html)())
        await self.streams.on_connect()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "connection"):
            self.streams.close()
            await self.channel_layer.group_discard(session_group(self.session.pk), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Every frame the page cannot use is answered with an error notice; the socket stays."""
        try:
            data = json_safety.loads(text_data or "")
        except ValueError:
            data = None
        action = data.get("action", "send") if isinstance(data, dict) else None
        handler = self._handler(action) if isinstance(action, str) else None
        # Form fields are scalars; htmx adds its request headers as the one object, HEADERS.
        fields = [value for key, value in data.items() if key != "HEADERS"] if handler is not None else []
        if handler is None or not all(isinstance(v, str | int | float | bool | None) for v in fields):
            await self._send_html(render_to_string("chat/_error.html", {"text": "The page sent a message the server cannot read."}))
            return
        try:
            await handler(data)
        except Exception:  # one bad frame must not take the page's socket down
            logger.exception("page frame handling failed on session %s", self.session.pk)
            await self._send_html(render_to_string("chat/_error.html", {"text": "The server could not process that action."}))

    def _handler(self, action: str) -> Any:
        return {
            "send": self._send_message,
            "stop": self._stop,
            "approve": self._decide,
            "reject": self._decide,
            "regenerate": self._regenerate,
            "switch": self._switch,
            "edit": self._edit,
            "tool_result": self._tool_result,
        }.get(action)

    async def _send_message(self, data: dict[str, Any]) -> None:
        """Text only (files come through the composer's HTTP form): sent or queued alike."""
        text = str(data.get("message", "")).strip()
        if not text:
            return
        try:
            if await sending.send(self.session, text, []):
                await broadcast.session_changed(self.session.pk)
        except sending.SendRefused as refused:
            await self._send_html(render_to_string("chat/_error.html", {"text": str(refused)}))

    async def _stop(self, data: dict[str, Any]) -> None:
        await chat.stop(self.session)

    async def _decide(self, data: dict[str, Any]) -> None:
        """Approve / Reject resolve the call through the same path as cf_agent_tool_approval."""
        approval = ToolApproval(str(data.get("tool_call_id", "")), data.get("action") == "approve", auto_continue=True)
        if approval.tool_call_id:
            scope = data.get("scope") or ("chat" if data.get("always") in ("on", "true", True) else "once")
            reason = str(data.get("reason", "")).strip()[:MAX_DENIAL_REASON]
            self.streams.await_continuation(
                await tool_state.apply_tool_approval(
                    self.session, approval, always_allow=scope == "chat", for_agent=scope == "agent", reason=reason
                )
            )

    async def _tool_result(self, data: dict[str, Any]) -> None:
        """A browser tool's output (chat.js), through the same path as cf_agent_tool_result."""
        error = str(data.get("error", ""))
        output: Any = None
        if not error:
            try:
                output = json.loads(str(data.get("output", "")))  # chat.js sends the output as JSON text
            except ValueError:
                error = "The browser sent an unreadable tool output."
        result = ToolResult(
            tool_call_id=str(data.get("tool_call_id", "")),
            tool_name=str(data.get("tool_name", "")),
            output=None if error else output,
            is_error=bool(error),
            error_text=error or None,
            auto_continue=True,
            client_tools=None,
        )
        if result.tool_call_id:
            self.streams.await_continuation(await tool_state.apply_tool_result(self.session, result))

    async def _regenerate(self, data: dict[str, Any]) -> None:
        """Like the client's regenerate(): the conversation up to the answered message, again."""
        history = await db_async(transcript.transcript)(self.session)
        ids = [m["id"] for m in history]
        if data.get("message_id") not in ids:
            return
        before = history[: ids.index(data["message_id"])]
        model = str(data.get("model", ""))
        if model and model not in await db_async(model_choices)():
            return
        body = {"model": model} if model else None
        if before:
            await chat.submit(self.session, self.connection, ChatRequest(new_request_id(), before, "regenerate-message", None, body))

    async def _edit(self, data: dict[str, Any]) -> None:
        """An edited user message: resent under its id with new text, it becomes a sibling of
        the original (which keeps its answers, reachable with ‹ ›) and is answered anew."""
        text = str(data.get("message", "")).strip()
        history = await db_async(transcript.transcript)(self.session)
        ids = [m["id"] for m in history]
        if not text or data.get("message_id") not in ids:
            return
        index = ids.index(data["message_id"])
        if history[index]["role"] != "user":
            return
        edited: UIMessage = {"id": history[index]["id"], "role": "user", "parts": [{"type": "text", "text": text}]}
        await chat.submit(self.session, self.connection, ChatRequest(new_request_id(), [*history[:index], edited], "submit-message", None, None))

    async def _switch(self, data: dict[str, Any]) -> None:
        if await db_async(transcript.switch_branch)(self.session, str(data.get("message_id", ""))):
            current = await db_async(transcript.transcript)(self.session)
            await broadcast.broadcast(self.session.pk, [frames.chat_messages(current)])

    # -- frames → HTML ----------------------------------------------------------------------
    async def render_frames(self, outgoing: list[frames.Frame]) -> None:
        html: list[str] = []
        for frame in outgoing:
            kind = frame.get("type")
            if kind == frames.STREAM_RESUMING:
                # The page always wants the stream: acknowledge on its behalf.
                await self.streams.on_ack(frame["id"])
            elif kind == frames.USE_CHAT_RESPONSE:
                html.extend(self._apply_response(frame))
            elif kind == frames.CHAT_MESSAGES:
                self.streaming.clear()
                html.append(await self._conversation_html(frame["messages"]))
            elif kind == frames.CHAT_CLEAR:
                html.append(await self._conversation_html([]))
            elif kind == frames.MESSAGE_UPDATED:
                html.extend(await db_async(render_conversation)(self.session, [frame["message"]], swap_oob=True))
        if html:
            await self._send_html("".join(html))

    def _apply_response(self, frame: frames.Frame) -> list[str]:
        request_id = frame["id"]
        if frame.get("error"):
            return [render_to_string("chat/_error.html", {"text": frame.get("body", "")})]
        if frame.get("done"):
            self.streaming.pop(request_id, None)
            return [render_to_string("chat/_streaming_slot.html", {"content": ""})] if frame.get("replay") else []
        body = frame.get("body")
        if not body:
            return []
        builder = self.streaming.setdefault(
            request_id, MessageBuilder({"id": f"stream-{request_id}", "role": "assistant", "parts": []})
        )
        try:
            builder.apply(json.loads(body))
        except ValueError:
            return []
        content = mark_safe(render_message_html(builder.message, actions=False))  # noqa: S308 - rendered by our templates
        return [render_to_string("chat/_streaming_slot.html", {"content": content})]

    async def _conversation_html(self, messages: list[UIMessage]) -> str:
        def render() -> tuple[str, str]:  # both reads in one hand-off to the database threads
            return "".join(render_conversation(self.session, messages)), render_queue(self.session, swap_oob=True)

        rendered, queue = await db_async(render)()
        # Both pieces were rendered by our templates (autoescaped there).
        return render_to_string("chat/_conversation_swap.html", {"messages": mark_safe(rendered), "queue": mark_safe(queue)})  # noqa: S308

    async def agent_session_changed(self, message: dict[str, Any]) -> None:
        """A new title (header, sidebar link) or a changed queue."""
        await self._send_html(await db_async(self._session_html)())

    def _session_html(self) -> str:
        session = Session.objects.select_related("agent").filter(pk=self.session.pk).first()
        if session is None:
            return ""
        html = render_queue(session, swap_oob=True)
        if session.title != self.shown_title:
            self.shown_title = session.title
            html += render_to_string("chat/_title.html", {"session": session, "swap_oob": True})
            # Only the conversation's own link in the sidebar: an open menu or a search stays as it is.
            html += render_to_string("chat/_session_link.html", {"s": session, "swap_oob": True})
        return html

    async def _send_html(self, html: str) -> None:
        await self.send(text_data=html)

    # -- channel-layer messages (same envelope as the protocol consumer) ----------------------------------
    async def agent_frames(self, message: dict[str, Any]) -> None:
        # The page renders every transcript, including the ones a protocol requester skips.
        await self.render_frames(message["frames"])
