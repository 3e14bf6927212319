"""Shared fixtures: users and tokens, the fake OpenAI-compatible upstream wired into settings,
and WebSocket clients speaking to the real ASGI application."""
from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from agents_app.storage.models import ApiToken

pytest_plugins = [
    "tests.plugins.fake_openai",
    "tests.plugins.live_server",
    "tests.plugins.celery_worker",
    "tests.plugins.throwaway_services",
    "tests.plugins.browser",
]


@pytest.fixture(scope="session", autouse=True)
def _database_threads_let_go(django_db_setup: Any) -> Iterator[None]:
    """The turn engine's database threads keep their connections open; the test database
    can only be dropped once they are closed."""
    yield
    from agents_app.storage import db_threads

    db_threads.close_connections()


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> None:
    """Each test runs on a new event loop, and a channel layer's receive state (channels-redis's
    receive lock and buffers, the in-memory layer's queues) belongs to the loop that used it.
    A socket whose disconnect timed out on a loaded machine leaves that state held by a dead
    loop, failing every later test; so each test gets layer instances of its own. A server
    process has one loop for its life, so only tests need this."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()


# How long, once a test is done, its turns may take to end and then their listeners to run,
# before they are left (turns) or cancelled (listeners).
TURNS_GRACE = 2.0
TURN_LISTENERS_GRACE = 5.0


@pytest.fixture
async def _turns_end_before_their_loop_closes() -> AsyncIterator[None]:
    """A turn's listeners (the chat page's queue, titles: turns/turn_listeners.py) start once
    the turn has ended, after its done frame, which is where most tests stop. Left pending as
    the test's event loop closes, they could never finish: destroyed later, in whichever test
    collected them, they were logged there as asyncio errors. Every async test lets the turns
    it started end (a turn a test leaves running on purpose is waited for only briefly), then
    their listeners finish."""
    yield
    from agents_app.turns import runner, turn_listeners

    loop = asyncio.get_running_loop()
    ending = [task for task in runner._tasks if task.get_loop() is loop]
    if ending:
        await asyncio.wait(ending, timeout=TURNS_GRACE)
    try:
        await asyncio.wait_for(turn_listeners.wait_idle(), TURN_LISTENERS_GRACE)
    except TimeoutError:  # wait_for has cancelled them and waited for that
        pass


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Appended last, so set up last and torn down first: before the database, the fake
    # upstream and the channel layer the listeners use.
    for item in items:
        if isinstance(item, pytest.Function) and asyncio.iscoroutinefunction(item.obj):
            item.fixturenames.append("_turns_end_before_their_loop_closes")


@pytest.fixture
def user(db: Any) -> Any:
    return get_user_model().objects.create_user("alice", password="wonderland-42")


@pytest.fixture
def other_user(db: Any) -> Any:
    return get_user_model().objects.create_user("bob", password="builder-42")


@pytest.fixture
def token(user: Any) -> str:
    return ApiToken.issue(user)[1]


@pytest.fixture
def model(fake_openai: Any, settings: Any) -> Iterator[Any]:
    """The fake upstream, configured as the model provider for every turn."""
    settings.OPENAI_BASE_URL = fake_openai.base_url
    settings.OPENAI_API_KEY = "sk-test-secret"
    settings.OPENAI_MODEL = "fake-model"
    yield fake_openai


class AgentSocket:
    """A WebSocket client on the real ASGI app that reads frames as the official client would."""

    def __init__(self, communicator: WebsocketCommunicator, connection_id: str) -> None:
        self.communicator = communicator
        self.connection_id = connection_id
        self.received: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any]) -> None:
        await self.communicator.send_to(text_data=json.dumps(frame))

    async def send_raw(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def next(self, timeout: float = 5) -> dict[str, Any]:
        frame = json.loads(await self.communicator.receive_from(timeout=timeout))
        self.received.append(frame)
        return frame

    async def until(self, predicate: Any, timeout: float = 10) -> list[dict[str, Any]]:
        """Frames up to and including the first one matching `predicate`."""
        seen = []
        while True:
            frame = await self.next(timeout)
            seen.append(frame)
            if predicate(frame):
                return seen

    async def frames_for(self, seconds: float) -> list[dict[str, Any]]:
        """Every frame that arrives within `seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        frames = []
        while (left := deadline - loop.time()) > 0:
            try:
                frames.append(await self.next(left))
            except asyncio.TimeoutError:
                break
        return frames

    async def no_frame(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout=timeout)

    async def chat(self, request_id: str, messages: list[dict[str, Any]], **body: Any) -> None:
        payload = {"messages": messages, "trigger": "submit-message", **body}
        await self.send(
            {"type": "cf_agent_use_chat_request", "id": request_id, "init": {"method": "POST", "body": json.dumps(payload)}}
        )

    async def close(self) -> None:
        await self.communicator.disconnect()


async def connect_page_socket(user: Any, agent: str, name: str) -> WebsocketCommunicator:
    """The chat page's socket for the stored conversation `/chat/<agent>/<name>/` (created here:
    the page socket serves stored conversations only), authenticated by a browser session
    cookie, past the conversation it draws on connect."""
    from asgiref.sync import sync_to_async
    from django.test import Client

    from agents_app.turns.instances import resolve_session
    from chatproject.asgi import application

    await sync_to_async(resolve_session)(agent, name, user)
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(application, f"/ui/ws/{agent}/{name}/", headers=[(b"cookie", cookie)])
    connected, _ = await communicator.connect()
    assert connected
    assert 'id="messages"' in await communicator.receive_from(timeout=10)
    return communicator


def user_message(text: str, message_id: str | None = None) -> dict[str, Any]:
    return {"id": message_id or uuid.uuid4().hex[:16], "role": "user", "parts": [{"type": "text", "text": text}]}


def is_done(request_id: str) -> Any:
    return lambda f: f.get("type") == "cf_agent_use_chat_response" and f.get("id") == request_id and f.get("done")


def chunks_of(frames: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(f["body"])
        for f in frames
        if f.get("type") == "cf_agent_use_chat_response" and f.get("id") == request_id and f.get("body") and not f.get("error")
    ]


@pytest.fixture
async def open_socket() -> AsyncIterator[Any]:
    from chatproject.asgi import application

    sockets: list[AgentSocket] = []

    async def connect(path: str, *, token: str | None = None, connection_id: str | None = None, headers: list[tuple[bytes, bytes]] | None = None, expect_connected: bool = True, query: str = "", wait_ready: bool = False) -> AgentSocket:
        connection_id = connection_id or str(uuid.uuid4())
        query = f"_pk={connection_id}" + (f"&token={token}" if token else "") + (f"&{query}" if query else "")
        communicator = WebsocketCommunicator(application, f"{path}?{query}", headers=headers or [])
        connected, _ = await communicator.connect(timeout=10)  # generous on a loaded machine
        assert connected is expect_connected
        socket = AgentSocket(communicator, connection_id)
        sockets.append(socket)
        if wait_ready:  # the MCP frame is the last connect frame
            await socket.until(lambda f: f["type"] == "cf_agent_mcp_servers")
        return socket

    yield connect
    for socket in sockets:
        try:
            await socket.communicator.disconnect()
        except (Exception, asyncio.CancelledError):  # already closed (or timed out closing) in the test
            pass


@pytest.fixture(autouse=True)
def _titles_from_first_words(settings: Any) -> None:
    """A model-made title would take a scripted reply meant for a turn: tests that check
    model titles turn them back on."""
    settings.AGENTS_CHAT_TITLES = "words"


@pytest.fixture(autouse=True)
def _fresh_limit_counters() -> None:
    """Limit counters (agents_app/limits.py) live in the cache, which outlives a test and,
    with Redis, a run: every test starts with none."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_gateway_copies() -> None:
    """The gateway's per-process copies of its configuration and of sessions' owners
    (agents_app/gateway/process_cache.py) outlive a test, whose rows go without a signal
    (rolled back or truncated): every test starts with none."""
    from agents_app.gateway import process_cache

    process_cache.clear_all()


@pytest.fixture(autouse=True)
def _test_agents() -> None:
    """Register the test agents (importing the module registers them)."""
    import tests.agents  # noqa: F401
