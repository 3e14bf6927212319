"""The chat.completions stream class (providers/chunk_stream.py) gives what the SDK's own
`AsyncStream[object]` gives, chunk for chunk and error for error, over real sockets."""
from __future__ import annotations

import asyncio
import gc
import gzip
import sys
from typing import Any

import openai
import pytest

from agents_app.providers import chunk_stream, clients, openai_chat
from agents_app.providers.chunk_stream import ChunkStream
from tests.test_upstream_transport import STREAM_HEAD, ScriptedUpstream, chunked, keep_answering, read_request

pytestmark = pytest.mark.skipif(not chunk_stream.SUPPORTED, reason="built on openai 3's stream internals")

STREAM_CLASSES = {"sdk": openai.AsyncStream[object], "lean": ChunkStream}
CHUNK = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n'
USAGE = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
DONE = b"data: [DONE]\n\n"

BODIES = {
    "one chunk per piece": [CHUNK % b"Hel", CHUNK % b"lo", USAGE, DONE],
    "several chunks in one piece": [CHUNK % b"a" + CHUNK % b"b" + CHUNK % b"c", DONE],
    "a chunk split across pieces": [(CHUNK % b"split")[:17], (CHUNK % b"split")[17:], DONE],
    "comments, named events and CRLF line ends": [b": keep-alive\r\n\r\n", b"event: message\r\n" + (CHUNK % b"x").replace(b"\n", b"\r\n"), DONE],
    "non-ASCII text": [CHUNK % "caf\u00e9 \u2615".encode(), DONE],
    "no [DONE] before the end": [CHUNK % b"last"],
    "nothing after [DONE] is read": [CHUNK % b"kept", DONE + CHUNK % b"dropped"],
}


async def read_answer(stream_cls: Any, url: str) -> tuple[list[Any], BaseException | None]:
    """The chunks a stream of `stream_cls` gives for one call, and what it raised (None: nothing)."""
    client = clients.shared(url.removesuffix("/chat/completions"), "k", 2)
    chunks: list[Any] = []
    try:
        stream = await client.post("/chat/completions", body={"model": "m", "stream": True}, cast_to=object, stream=True, stream_cls=stream_cls)
        async for chunk in stream:
            chunks.append(chunk)
    except Exception as error:  # noqa: BLE001 - the error is what the test compares
        return chunks, error
    return chunks, None


async def both(handler: Any) -> dict[str, tuple[list[Any], BaseException | None]]:
    async with ScriptedUpstream(handler) as upstream:
        return {name: await read_answer(cls, upstream.url) for name, cls in STREAM_CLASSES.items()}


def answering(*pieces: bytes, head: bytes = STREAM_HEAD, then_hang: bool = False, then_break: bool = False) -> Any:
    """A handler that answers every request with `pieces`, each in a network write of its own."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(head)
            for piece in pieces:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.001)
            if then_hang:
                await asyncio.sleep(10)
            if then_break:
                writer.transport.abort()
                return
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    return handler


@pytest.mark.parametrize("pieces", list(BODIES.values()), ids=list(BODIES))
async def test_every_stream_gives_the_chunks_the_sdks_stream_gives(pieces: list[bytes]) -> None:
    answers = await both(answering(*pieces))
    assert answers["lean"] == answers["sdk"]
    assert answers["lean"][1] is None and answers["lean"][0]


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (b'{"message":"The model is overloaded","type":"server_error"}', "The model is overloaded"),
        (b'{"type":"server_error"}', "An error occurred during streaming"),
        (b'"boom"', "An error occurred during streaming"),
    ],
    ids=["with a message", "without a message", "a bare string"],
)
async def test_an_error_in_the_stream_raises_the_sdks_api_error(error: bytes, message: str) -> None:
    answers = await both(answering(CHUNK % b"partial", b'data: {"error":%s}\n\n' % error, DONE))
    for chunks, raised in answers.values():
        assert [chunk["choices"][0]["delta"]["content"] for chunk in chunks] == ["partial"]
        assert type(raised) is openai.APIError
        assert raised.message == message
    assert answers["lean"][1].body == answers["sdk"][1].body


async def test_a_stream_that_stalls_midway_raises_a_timeout() -> None:
    answers = await both(answering(CHUNK % b"then nothing", then_hang=True))
    for chunks, raised in answers.values():
        assert len(chunks) == 1
        assert isinstance(raised, openai.APITimeoutError)


async def test_a_connection_broken_midway_raises_a_connection_error() -> None:
    answers = await both(answering(CHUNK % b"then gone", then_break=True))
    for chunks, raised in answers.values():
        assert len(chunks) == 1
        assert type(raised) is openai.APIConnectionError


async def test_a_gzip_encoded_stream_is_decoded() -> None:
    packed = gzip.compress(CHUNK % b"packed" + DONE)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed)
    answers = await both(await keep_answering(packed, head))
    assert answers["lean"] == answers["sdk"]
    assert [chunk["choices"][0]["delta"]["content"] for chunk in answers["lean"][0]] == ["packed"]


async def test_calls_read_to_done_share_one_connection() -> None:
    # The body's end comes in a write after `[DONE]`: the stream reads on to it.
    async with ScriptedUpstream(answering(CHUNK % b"a", DONE)) as upstream:
        for _ in range(3):
            assert (await read_answer(ChunkStream, upstream.url))[1] is None
        assert upstream.connections == 1


async def test_model_calls_leave_no_async_generator_for_the_event_loop_to_close() -> None:
    # Each would be closed by a task the loop schedules when it is collected: per model call.
    firstiter, finalizer = sys.get_asyncgen_hooks()
    left: list[str] = []

    def finalize(generator: Any) -> None:
        left.append(generator.__qualname__)
        finalizer(generator)

    sys.set_asyncgen_hooks(firstiter, finalize)
    try:
        async with ScriptedUpstream(answering(CHUNK % b"a", DONE)) as upstream:
            client = clients.shared(upstream.url.removesuffix("/chat/completions"), "k", 2)
            for _ in range(3):
                stream = await openai_chat.stream_chat_chunks(client, {"model": "m", "stream": True, "messages": []})
                assert [chunk["choices"][0]["delta"]["content"] async for chunk in stream] == ["a"]
        gc.collect()
    finally:
        sys.set_asyncgen_hooks(firstiter, finalizer)
    assert left == []


def test_the_model_calls_read_their_answers_with_it() -> None:
    async def stream_class() -> type:
        async with ScriptedUpstream(await keep_answering(chunked(DONE))) as upstream:
            client = clients.shared(upstream.url.removesuffix("/chat/completions"), "k", 2)
            stream = await openai_chat.stream_chat_chunks(client, {"model": "m", "stream": True, "messages": []})
            async for _ in stream:
                pass
            return type(stream)

    assert asyncio.run(stream_class()) is ChunkStream
