"""The model calls' HTTP transport (providers/upstream_transport.py), over real sockets: what
the `openai` SDK and httpx see of it. A scripted asyncio server plays the upstream where the
fake OpenAI server cannot misbehave on cue (split chunks, stalls, closed sockets)."""
from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from agents_app.providers import clients
from agents_app.providers.openai_chat import stream_chat_chunks
from agents_app.providers.upstream_transport import StreamingTransport, http
from agents_app.testing.fake_openai import FakeOpenAI, Reply

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedUpstream:
    """An HTTP/1.1 server whose connections each run `handler` (one request after another)."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.connections = 0
        self._tls = tls
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        if self._tls is not None:
            return f"https://localhost:{port}/v1/chat/completions"  # the name the certificate is for
        return f"http://{host}:{port}/v1/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    return await reader.readexactly(length)


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


async def keep_answering(body: bytes, head: bytes = STREAM_HEAD) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(head + body)
            await writer.drain()

    return handler


async def collect(client: Any, url: str, **kwargs: Any) -> bytes:
    async with client.stream("POST", url, json={"stream": True}, **kwargs) as response:
        return b"".join([piece async for piece in response.aiter_bytes()])


async def connections_used(client: Any, handler: Handler, calls: int, body: bytes) -> int:
    """How many connections `calls` calls in a row opened, each answered with `body`."""
    async with ScriptedUpstream(handler) as upstream:
        for _ in range(calls):
            assert await collect(client, upstream.url) == body
        return upstream.connections


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    transport = StreamingTransport()
    async with http.AsyncClient(transport=transport) as httpx_client:
        yield httpx_client


async def test_a_chunked_body_arrives_whole_however_the_network_splits_it(client: Any) -> None:
    body = chunked(b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n")

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for index in range(0, len(STREAM_HEAD + body), 3):  # splits size lines, data and CRLFs
            writer.write((STREAM_HEAD + body)[index : index + 3])
            await writer.drain()
            await asyncio.sleep(0)

    async with ScriptedUpstream(dribble) as upstream:
        assert await collect(client, upstream.url) == b"data: one\n\ndata: two\n\ndata: [DONE]\n\n"


async def test_bodies_of_a_known_length_and_until_close_arrive_whole(client: Any) -> None:
    async def sized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")

    async with ScriptedUpstream(sized) as upstream:
        assert await collect(client, upstream.url) == b"hello"
    async with ScriptedUpstream(until_close) as upstream:
        assert await collect(client, upstream.url) == b"all of it"


async def test_consecutive_calls_reuse_one_connection(client: Any) -> None:
    assert await connections_used(client, await keep_answering(chunked(b"data: [DONE]\n\n")), 3, b"data: [DONE]\n\n") == 1


async def test_a_connection_the_server_closes_is_not_reused(client: Any) -> None:
    head = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n"
    assert await connections_used(client, await keep_answering(b"ok", head), 2, b"ok") == 2


async def test_a_kept_connection_dropped_by_the_server_is_replaced_without_an_error(client: Any) -> None:
    async def answer_once_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD + chunked(b"data: [DONE]\n\n"))
        await writer.drain()
        await reader.read(1)  # the next request on this socket: drop it unanswered

    assert await connections_used(client, answer_once_then_drop, 2, b"data: [DONE]\n\n") == 2


async def test_a_stalled_stream_raises_a_read_timeout(client: Any) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD + b"b\r\ndata: one\n\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async with ScriptedUpstream(stall) as upstream:
        with pytest.raises(http.ReadTimeout):
            await collect(client, upstream.url, timeout=http.Timeout(5, read=0.3))


async def test_time_the_caller_spends_between_reads_is_not_a_read_timeout(client: Any) -> None:
    async def two_pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD + b"b\r\ndata: one\n\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)  # past the read timeout, while the caller is still busy with the first piece
        writer.write(b"b\r\ndata: two\n\n\r\n0\r\n\r\n")
        await writer.drain()

    async with ScriptedUpstream(two_pieces) as upstream:
        async with client.stream("POST", upstream.url, json={}, timeout=http.Timeout(5, read=0.2)) as response:
            pieces = []
            async for piece in response.aiter_bytes():
                pieces.append(piece)
                await asyncio.sleep(0.5)
        assert b"".join(pieces) == b"data: one\n\ndata: two\n\n"


async def test_a_body_cut_short_is_a_protocol_error_and_its_connection_is_dropped(client: Any) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD + b"b\r\ndata: one\n\n\r\n")
        await writer.drain()

    async with ScriptedUpstream(cut) as upstream:
        with pytest.raises(http.RemoteProtocolError):
            await collect(client, upstream.url)
    assert client._transport.idle_connections() == 0


async def test_an_invalid_content_length_is_a_protocol_error_and_its_connection_is_closed(client: Any) -> None:
    closed = asyncio.Event()

    async def bad_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\nbody")
        await writer.drain()
        if await reader.read(1) == b"":
            closed.set()

    async with ScriptedUpstream(bad_length) as upstream:
        with pytest.raises(http.RemoteProtocolError):
            await collect(client, upstream.url)
        await asyncio.wait_for(closed.wait(), 5)


async def test_a_stream_left_unread_closes_its_connection(client: Any) -> None:
    async with ScriptedUpstream(await keep_answering(chunked(b"data: one\n\n", b"x" * 200_000))) as upstream:
        async with client.stream("POST", upstream.url, json={}) as response:
            async for _ in response.aiter_raw():
                break
        assert client._transport.idle_connections() == 0
        assert await collect(client, upstream.url)
        assert upstream.connections == 2


async def test_a_refused_connection_is_a_connect_error(client: Any) -> None:
    async with ScriptedUpstream(await keep_answering(b"")) as upstream:
        url = upstream.url
    with pytest.raises(http.ConnectError):
        await collect(client, url)


async def test_gzip_bodies_are_decoded(client: Any) -> None:
    packed = gzip.compress(b'{"ok": true}')
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed)
    async with ScriptedUpstream(await keep_answering(packed, head)) as upstream:
        response = await client.post(upstream.url, json={})
        assert response.json() == {"ok": True}


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A self-signed certificate for localhost: the server's TLS context and the file to trust."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, cert


async def test_https_upstreams_are_read_over_tls(certificate: tuple[ssl.SSLContext, Path]) -> None:
    server, cert = certificate
    transport = StreamingTransport(ssl_context=ssl.create_default_context(cafile=str(cert)))
    async with http.AsyncClient(transport=transport) as client:
        async with ScriptedUpstream(await keep_answering(chunked(b"data: [DONE]\n\n")), tls=server) as upstream:
            assert await collect(client, upstream.url) == b"data: [DONE]\n\n"


async def test_an_untrusted_certificate_is_refused_by_default(certificate: tuple[ssl.SSLContext, Path]) -> None:
    server, _ = certificate
    async with http.AsyncClient(transport=StreamingTransport()) as client:
        async with ScriptedUpstream(await keep_answering(b""), tls=server) as upstream:
            with pytest.raises(http.ConnectError):
                await collect(client, upstream.url)


# -- through the SDK, against the fake OpenAI server --------------------------------------
@pytest.fixture
def upstream() -> Any:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def sdk_client(base_url: str, timeout: float = 10) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=base_url, api_key="k", max_retries=0, timeout=timeout,
        http_client=openai.DefaultAsyncHttpxClient(transport=StreamingTransport()),
    )


async def test_the_sdk_streams_a_chat_completion_through_it(upstream: FakeOpenAI) -> None:
    upstream.script(Reply.text("Hello there, friend"))
    async with sdk_client(upstream.base_url) as client:
        stream = await stream_chat_chunks(client, {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        text = "".join([(chunk["choices"][0]["delta"].get("content") or "") async for chunk in stream if chunk["choices"]])
    assert text == "Hello there, friend"


async def test_the_sdk_reports_an_upstream_error_status_with_its_message(upstream: FakeOpenAI) -> None:
    upstream.script(Reply.error(429, "Slow down"))
    async with sdk_client(upstream.base_url) as client:
        with pytest.raises(openai.RateLimitError, match="Slow down"):
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


async def test_the_sdk_reports_an_unreachable_upstream_as_a_connection_error() -> None:
    async with ScriptedUpstream(await keep_answering(b"")) as gone:
        base_url = gone.url.removesuffix("/chat/completions")
    async with sdk_client(base_url) as client:
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


async def test_the_sdk_reports_a_stalled_upstream_as_a_timeout(upstream: FakeOpenAI) -> None:
    upstream.script(Reply.text("late", first_token_delay=3))
    async with sdk_client(upstream.base_url, timeout=0.5) as client:
        with pytest.raises(openai.APITimeoutError):
            stream = await stream_chat_chunks(client, {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
            async for _ in stream:
                pass


def test_an_upstream_behind_a_proxy_keeps_httpx_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    async def transports() -> tuple[Any, Any]:
        direct = clients.shared("http://direct.example/v1", "k", 5)
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
        proxied = clients.shared("https://proxied.example/v1", "k", 5)
        return direct._client._transport, proxied._client._transport

    direct, proxied = asyncio.run(transports())
    assert isinstance(direct, StreamingTransport)
    assert not isinstance(proxied, StreamingTransport)


async def test_a_model_stream_the_sdk_stops_reading_at_done_leaves_its_connection_for_the_next_call() -> None:
    # The SDK stops at `[DONE]`, whose read also held the body's last chunk, and drains the
    # rest in a second iteration of the body: that one must find the end already decoded.
    async with ScriptedUpstream(await keep_answering(chunked(b'data: {"choices": []}\n\n', b"data: [DONE]\n\n"))) as scripted:
        client = clients.shared(scripted.url.removesuffix("/chat/completions"), "k", 5)
        for _ in range(3):
            stream = await stream_chat_chunks(client, {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
            assert [chunk async for chunk in stream] == [{"choices": []}]
        assert scripted.connections == 1


@pytest.mark.parametrize(("keepalive", "connections"), [(0.1, 2), (30.0, 1)])
async def test_an_idle_upstream_connection_is_kept_for_agents_upstream_keepalive_seconds(
    settings: Any, keepalive: float, connections: int
) -> None:
    settings.AGENTS_UPSTREAM_KEEPALIVE = keepalive
    async with ScriptedUpstream(await keep_answering(chunked(b"data: [DONE]\n\n"))) as upstream:
        client = clients.shared(upstream.url.removesuffix("/chat/completions"), "k", 5)
        for _ in range(2):
            stream = await stream_chat_chunks(client, {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
            assert [chunk async for chunk in stream] == []
            await asyncio.sleep(0.3)  # a person reading the answer, longer than a 0.1 s keep-alive
        assert upstream.connections == connections


def test_an_upstream_behind_a_proxy_keeps_idle_connections_as_long(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.AGENTS_UPSTREAM_KEEPALIVE = 45.0
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")

    async def proxied_pool() -> Any:
        return clients.shared("https://proxied.example/v1", "k", 5)._client._transport._pool

    assert asyncio.run(proxied_pool())._keepalive_expiry == 45.0
