"""Model requests built from templates (providers/request_template.py): on the wire, every
request is byte for byte what the SDK's own build sends, over a real socket."""
from __future__ import annotations

import asyncio
import copy
from typing import Any

import openai
import pytest

from agents_app.providers import clients
from agents_app.providers.openai_chat import stream_chat_chunks
from agents_app.providers.upstream_transport import StreamingTransport, http
from tests.test_upstream_transport import STREAM_HEAD, ScriptedUpstream, chunked

ANSWER = chunked(b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n', b"data: [DONE]\n\n")


class RecordingUpstream(ScriptedUpstream):
    """Answers every request with a one-word stream and keeps each request as it came."""

    def __init__(self) -> None:
        super().__init__(self._answer)
        self.requests: list[tuple[list[bytes], bytes]] = []

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.rstrip(b"\r\n").split(b"\r\n")
            length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
            self.requests.append((lines, await reader.readexactly(length)))
            writer.write(STREAM_HEAD + ANSWER)
            await writer.drain()


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "stream": True, "messages": [{"role": "user", "content": text}], **extra}


async def send(client: openai.AsyncOpenAI, body: dict[str, Any], **post: Any) -> None:
    if post:  # what a caller passing its own options sends (not through stream_chat_chunks)
        stream: Any = await client.post("/chat/completions", body=body, cast_to=object, stream=True, stream_cls=openai.AsyncStream[object], **post)
    else:
        stream = await stream_chat_chunks(client, body)
    assert [chunk async for chunk in stream]


async def as_sent(upstream: RecordingUpstream, client: openai.AsyncOpenAI, *bodies: dict[str, Any], **post: Any) -> list[tuple[list[bytes], bytes]]:
    upstream.requests.clear()
    for body in bodies:
        await send(client, body, **post)
    return list(upstream.requests)


def _sdk_build(self: openai.AsyncOpenAI, options: Any, *, retries_taken: int = 0) -> Any:
    return openai.AsyncOpenAI._build_request(self, options, retries_taken=retries_taken)


# The shared client with the SDK's own build: the reference. Same class name, as the SDK
# names the client's class in its User-Agent.
SdkBuilt = type("SharedAsyncOpenAI", (clients.SharedAsyncOpenAI,), {"_build_request": _sdk_build})


def sdk_client(base_url: str, transport: str) -> openai.AsyncOpenAI:
    return SdkBuilt(
        base_url=base_url, api_key="sk-test", max_retries=0, timeout=30.0,
        http_client=openai.DefaultAsyncHttpxClient(transport=StreamingTransport() if transport == "streaming" else http.AsyncHTTPTransport()),
    )


@pytest.mark.parametrize("transport", ["streaming", "httpx"])
async def test_every_chat_request_is_sent_as_the_sdk_builds_it(transport: str, settings: Any) -> None:
    settings.AGENTS_UPSTREAM_TRANSPORT = transport
    bodies = [chat("Hello"), chat("Ünïcödé and a longer question", tools=[{"type": "function", "function": {"name": "f"}}]), chat("Again")]
    async with RecordingUpstream() as upstream:
        base_url = upstream.url.removesuffix("/chat/completions")
        expected = await as_sent(upstream, sdk_client(base_url, transport), *bodies)
        shared = clients.shared(base_url, "sk-test", 30.0)
        sent = await as_sent(upstream, shared, *bodies)
    assert sent == expected
    assert [body for _, body in sent] == [openai._utils._json.openapi_dumps(body) for body in bodies]


async def test_tools_offered_again_are_sent_as_the_sdk_encodes_them_and_a_changed_copy_as_changed() -> None:
    weather = {"type": "function", "function": {"name": "weather", "description": "Wetter für Städte", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}}, "required": ["city"]}}}
    search = {"type": "function", "function": {"name": "search", "description": "Search the web", "parameters": {"type": "object", "properties": {}}}}
    changed = copy.deepcopy(weather)
    changed["function"]["description"] = "Weather for cities"
    bodies = [chat("One", tools=[weather, search]), chat("Two", tools=[weather, search], tool_choice="auto"), chat("Three", tools=[changed, search])]
    async with RecordingUpstream() as upstream:
        base_url = upstream.url.removesuffix("/chat/completions")
        expected = await as_sent(upstream, sdk_client(base_url, "streaming"), *bodies)
        sent = await as_sent(upstream, clients.shared(base_url, "sk-test", 30.0), *bodies)
    assert sent == expected
    assert [body for _, body in sent] == [openai._utils._json.openapi_dumps(body) for body in bodies]


async def test_a_chat_calls_options_are_those_the_sdks_post_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    given: list[Any] = []

    async def record(cast_to: Any, options: Any, **kwargs: Any) -> Any:
        given.append(options)
        return None

    client = clients.shared("http://127.0.0.1:9/v1", "sk-test", 30.0)
    monkeypatch.setattr(client, "request", record)
    body = chat("Hi", tools=[{"type": "function", "function": {"name": "f"}}])
    await client.post("/chat/completions", body=body, cast_to=object, stream=True, stream_cls=openai.AsyncStream[object])
    await stream_chat_chunks(client, body)
    by_post, ours = ({name: type(value) if isinstance(value, openai.NotGiven) else value for name, value in options.__dict__.items()} for options in given)
    assert ours == by_post


async def test_a_request_with_headers_of_its_own_carries_them_and_the_next_one_does_not() -> None:
    async with RecordingUpstream() as upstream:
        base_url = upstream.url.removesuffix("/chat/completions")
        shared = clients.shared(base_url, "sk-test", 30.0)
        await as_sent(upstream, shared, chat("Warm up"))
        [(own_head, _)] = await as_sent(upstream, shared, chat("Mine"), options={"headers": {"X-Trace": "t-1"}})
        [(next_head, _)] = await as_sent(upstream, shared, chat("Plain"))
    assert b"x-trace: t-1" in [line.lower() for line in own_head]
    assert not any(line.lower().startswith(b"x-trace") for line in next_head)


async def test_cookies_the_upstream_set_go_with_later_requests() -> None:
    async with RecordingUpstream() as upstream:
        base_url = upstream.url.removesuffix("/chat/completions")
        shared = clients.shared(base_url, "sk-test", 30.0)
        await as_sent(upstream, shared, chat("Warm up"))
        shared._client.cookies.set("affinity", "node-7", domain="127.0.0.1")
        [(head, _)] = await as_sent(upstream, shared, chat("With the cookie"))
    assert b"Cookie: affinity=node-7" in head
