"""The agent base class: `Agent` (identity, synchronised state, RPC, connection hooks,
schedules and sub-agents) and `callable_method`, which exposes a method to clients' `rpc` frames.
The chat agents build on it: `AIChatAgent` (chat_agent.py) and `ThinkAgent` (think_agent.py).

Subclass, decorate with `@register_agent`, and the class is served at
`/agents/<kebab-case class name>/<name>` over WebSocket and HTTP.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import pydantic
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse

from agents_app.gateway import workers_ai
from agents_app.mcp import oauth
from agents_app.mcp.agent_api import McpClientMixin
from agents_app.protocol import frames
from agents_app.protocol.inbound import AppMessage
from agents_app.storage.models import Agent as AgentRecord
from agents_app.storage.models import Session
from agents_app.think import sub_agents
from agents_app.turns import broadcast, scheduling
from agents_app.turns.types import Connection, ConnectionContext

_UNSET: Any = object()
AgentT = TypeVar("AgentT", bound="Agent")
# Agent instances this process has started (Agent.start), with what their start-up set. Bounded:
# an instance forgotten here starts again on its next use, as it would in a restarted process.
MAX_STARTED_INSTANCES = 2048
_started_instances: OrderedDict[tuple[type[Agent], int, datetime], dict[str, Any]] = OrderedDict()


def callable_method(func: Callable[..., Any] | None = None, *, streaming: bool = False) -> Any:
    """Mark a method as invokable by clients through `rpc` frames (the reference's @callable).
    A streaming method receives an `RpcStream` first and sends chunks through it."""

    def mark(method: Callable[..., Any]) -> Callable[..., Any]:
        method.agent_callable = True  # type: ignore[attr-defined]
        method.agent_streaming = streaming  # type: ignore[attr-defined]
        return method

    return mark(func) if func is not None else mark


class ReadonlyConnection(PermissionError):
    def __init__(self) -> None:
        super().__init__("Connection is readonly")


class Agent(McpClientMixin):
    """Base agent: identity, synchronised state, RPC and connection hooks."""

    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    send_identity_on_connect: ClassVar[bool] = True
    initial_state: ClassVar[Any] = _UNSET
    # Class attributes an admin may override per agent through Agent.settings (JSON).
    configurable: ClassVar[tuple[str, ...]] = ()
    # Validates `configure()` (per-instance config); without it any JSON object is accepted.
    config_model: ClassVar[type[pydantic.BaseModel] | None] = None

    def __init__(self, session: Session, record: AgentRecord) -> None:
        self.session = session
        self.record = record
        self.name = session.name
        # The connection whose RPC call is running, if any (readonly connections cannot set state).
        self.caller: Connection | None = None
        self._started = False
        # Sub-agent handles this object gave out, so each child starts up once (sub_agent()).
        self._sub_agents: dict[tuple[type[Agent], str], Agent] = {}
        for key, value in (record.settings or {}).items():
            if key in self.configurable:
                setattr(self, key, value)

    @property
    def ai(self) -> workers_ai.WorkersAI:
        """Workers AI's `env.AI`: `await self.ai.run(model, {"prompt": …})` (gateway/workers_ai.py)."""
        return workers_ai.WorkersAI(workers_ai.CallingAgent(self.record.slug, self.session.owner_id, self.session.pk))

    # -- state ---------------------------------------------------------------------
    @property
    def has_state(self) -> bool:
        return self.session.has_state or self.initial_state is not _UNSET

    @property
    def state(self) -> Any:
        if self.session.has_state:
            return self.session.state
        return None if self.initial_state is _UNSET else self.initial_state

    def validate_state_change(self, state: Any, source: Connection | None) -> None:
        """Raise to reject a client's state update (the client sees a generic error)."""

    async def on_state_update(self, state: Any, source: Connection | None) -> None:
        """Called after a state change was persisted and broadcast."""

    async def _store_state(self, state: Any) -> None:
        self.session.state = state
        self.session.has_state = True
        await sync_to_async(Session.objects.filter(pk=self.session.pk).update)(state=state, has_state=True)

    async def set_state(self, state: Any) -> None:
        """Persist state and broadcast it to every connection."""
        if self.caller is not None and self.caller.readonly:
            raise ReadonlyConnection
        await self._store_state(state)
        await broadcast.broadcast(self.session.pk, [frames.state(state)], skip_pending_resume=False)
        await self.on_state_update(state, None)

    async def apply_client_state(self, state: Any, source: Connection) -> None:
        if source.readonly:
            raise ReadonlyConnection
        self.validate_state_change(state, source)
        await self._store_state(state)
        await broadcast.broadcast(
            self.session.pk, [frames.state(state)], exclude=(source.id,), skip_pending_resume=False
        )
        await self.on_state_update(state, source)

    # -- connection hooks ------------------------------------------------------------
    def should_send_protocol_messages(self, connection: Connection) -> bool:
        """False for connections that want no identity/state/MCP frames (e.g. binary-only devices)."""
        return True

    def is_readonly(self, connection: Connection) -> bool:
        """True for connections that may watch but not change state."""
        return False

    async def on_connect(self, connection: Connection, ctx: ConnectionContext | None = None) -> None:
        """Runs after the connect frames were sent. `ctx` holds the opening request (path,
        headers, query, user) and `ctx.wait_until(coro)` for work that must finish even if
        the socket closes; overrides may take just `connection`."""

    async def on_close(self, connection: Connection) -> None:
        """Runs when a connection closes. Turns it started keep running."""

    async def on_message(self, connection: Connection, message: AppMessage) -> list[frames.Frame] | None:
        """Frames outside the protocol: return frames to send back, or stream with
        `await connection.send(...)` (each call runs beside the socket, which keeps receiving).
        The default answers with an error frame."""
        kind = message.data.get("type") if isinstance(message.data, dict) else None
        if kind is None:
            return [frames.error("Frames must be JSON objects with a string 'type'.")]
        return [frames.error(f"Unknown message type {kind!r}.", frame_type=str(kind))]

    async def on_request(self, request: HttpRequest, path: str) -> HttpResponse | workers_ai.AiTextStream:
        """HTTP requests to /agents/<agent>/<name>/<path> other than get-messages, streams/…
        and a chat agent's `POST chat` (transport/views.py serves those); `callback` completes
        an MCP server's OAuth authorization (mcp/oauth.py). A returned `self.ai.run(…,
        stream=True)` is sent as Workers AI's server-sent events."""
        if path.strip("/") == "callback" and request.method == "GET":
            return await oauth.handle_callback(self.session.pk, request)
        return HttpResponse("Not implemented", status=404, content_type="text/plain")

    async def fetch(
        self,
        path: str = "",
        *,
        method: str = "GET",
        query: dict[str, Any] | None = None,
        json: Any = None,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        """Send this instance an HTTP request from server code (the reference's `stub.fetch`):
        `on_request` serves it as if the instance's owner had sent it."""
        from agents_app.agents.addressing import build_request

        request = build_request(self, path, method=method, query=query, json=json, body=body, headers=headers)
        return await self.on_request(request, path)

    # -- per-instance config (think.md §8) -------------------------------------------------
    @callable_method
    async def configure(self, config: dict[str, Any]) -> dict[str, Any]:
        """Store this instance's config (validated by `config_model` when the class has one)."""
        if self.config_model is not None:
            try:
                config = self.config_model.model_validate(config).model_dump(mode="json")
            except pydantic.ValidationError as error:
                problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in error.errors())
                raise ValueError(f"Invalid config: {problems}") from error
        elif not isinstance(config, dict):
            raise ValueError("Invalid config: expected a JSON object")
        await sync_to_async(Session.objects.filter(pk=self.session.pk).update)(config=config)
        self.session.config = config
        return config

    @callable_method
    async def get_config(self) -> dict[str, Any] | None:
        """The stored config, or None before the first configure()."""
        return await sync_to_async(lambda: Session.objects.filter(pk=self.session.pk).values_list("config", flat=True).first())()

    # -- start-up ----------------------------------------------------------------------
    async def on_start(self) -> None:
        """Runs once per agent instance (class and session) in this process, before its first
        use: its first turn (Think agents) or sub_agent() handing it out. Every turn loads a
        fresh object, so keep what it sets in stored places (state, context blocks, schedules)."""

    def started_in_process(self) -> bool:
        """Whether this instance's start-up hooks have run in this process (`start` then
        only hands this object what they set)."""
        return self._started or self._start_key() in _started_instances

    def start_up_stores_nothing(self) -> bool:
        """Whether starting this instance cannot change what is stored for its session: its
        class keeps the no-op `on_start`. Then what a first turn read of the session before
        the start is still current after it."""
        return type(self).on_start is Agent.on_start

    def _start_key(self) -> tuple[type[Agent], int, Any]:
        return (type(self), self.session.pk, self.session.created_at)

    async def start(self) -> None:
        """Start this instance if this process has not yet (the hooks run once), then give
        this object what start-up set; later calls return at once."""
        if self._started:
            return
        key = self._start_key()
        adopted = _started_instances.get(key)
        if adopted is None:
            adopted = await self._start_up()
            _started_instances[key] = adopted
            while len(_started_instances) > MAX_STARTED_INSTANCES:
                _started_instances.popitem(last=False)
        for attribute, value in adopted.items():
            setattr(self, attribute, value)
        self._started = True

    async def _start_up(self) -> dict[str, Any]:
        """Run the start-up hooks; returns the attributes later objects of the instance adopt."""
        await self.on_start()
        return {}

    # -- sub-agents (think/sub_agents.py) --------------------------------------------------
    async def sub_agent(self, agent_class: type[AgentT], name: str) -> AgentT:
        """The `agent_class` instance `name` of this session's owner, created on first use and
        started (its `on_start`) before it is returned; this object hands out one handle per child."""
        handle = self._sub_agents.get((agent_class, name))
        if handle is None:
            handle = await sub_agents.sub_agent(self, agent_class, name)
            await handle.start()
            self._sub_agents[(agent_class, name)] = handle
        return handle  # type: ignore[return-value]

    async def abort_sub_agent(self, agent_class: type[Agent], name: str) -> bool:
        """Stop the child's running turn (its partial answer is kept); False if it never existed."""
        return await sub_agents.abort(self, agent_class, name)

    async def delete_sub_agent(self, agent_class: type[Agent], name: str) -> bool:
        """Abort the child's turns and delete it with its stored messages; False if it never existed."""
        self._sub_agents.pop((agent_class, name), None)
        return await sub_agents.delete(self, agent_class, name)

    # -- schedules (Celery runs them; the admin shows and edits them) ----------------------
    async def schedule(self, when: int | float | datetime | str, callback: str, payload: Any = None) -> dict[str, Any]:
        """Call `self.<callback>(payload)` after `when` seconds, at a datetime, or on a cron
        string ("0 9 * * 1-5"). Returns the schedule as the reference describes it."""
        if not callable(getattr(self, callback, None)):
            raise ValueError(f"{type(self).__name__} has no method {callback!r}")
        created = await sync_to_async(scheduling.create)(self.session, when, callback, payload)
        return scheduling.describe(created)

    async def get_schedules(self) -> list[dict[str, Any]]:
        """Schedules that have not run yet (one-shot) or keep running (cron)."""
        return [scheduling.describe(s) for s in await sync_to_async(scheduling.pending)(self.session)]

    async def cancel_schedule(self, schedule_id: str | int) -> bool:
        return await sync_to_async(scheduling.cancel)(self.session, schedule_id)
