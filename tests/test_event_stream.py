"""The event-stream decoder model streams are read with (providers/event_stream.py): it
yields exactly the events the `openai` SDK's own decoder yields, whatever the stream holds
and however the network splits it into reads."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from hypothesis import given, settings, strategies as st
from openai._streaming import SSEDecoder, ServerSentEvent

from agents_app.providers import clients
from agents_app.providers.event_stream import EventStreamDecoder

Decoded = list[tuple[str | None, str, str | None, int | None]]

# Streams are lines: a field (known, unknown, or none: a comment), a separator, a value whose
# characters may take several bytes (so reads can split inside one), and any line end.
_FIELDS = st.sampled_from(["data", "event", "id", "retry", "", "unknown", "dat"])
_SEPARATORS = st.sampled_from([":", ": ", ""])
_VALUES = st.one_of(
    st.sampled_from(["0", "5", " 12"]),  # retry values that count
    st.lists(st.sampled_from(["x", "5", " ", "\0", "é", "🙂", "{}", ":", "[DONE]"]), max_size=3).map("".join),
)
_LINE_ENDS = st.sampled_from(["\n", "\r", "\r\n"])
_LINES = st.one_of(st.tuples(_FIELDS, _SEPARATORS, _VALUES, _LINE_ENDS).map("".join), _LINE_ENDS)
_STREAMS = st.lists(_LINES, max_size=30).map(lambda lines: "".join(lines).encode())


def _reads(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(stream)]
    return [stream[start:end] for start, end in zip(bounds, bounds[1:])]


async def _async_reads(reads: list[bytes]) -> AsyncIterator[bytes]:
    for read in reads:
        yield read


def _fields(events: list[ServerSentEvent]) -> Decoded:
    return [(event.event, event.data, event.id, event.retry) for event in events]


async def _decoded(decoder: SSEDecoder | EventStreamDecoder, stream: bytes, cuts: list[int]) -> Decoded:
    return _fields([event async for event in decoder.aiter_bytes(_async_reads(_reads(stream, cuts)))])


@settings(max_examples=500, deadline=None)
@given(stream=_STREAMS, data=st.data())
def test_any_stream_split_anywhere_decodes_as_the_sdks_decoder_decodes_it(stream: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    every_byte = list(range(len(stream)))
    for reads in (cuts, every_byte):
        expected = asyncio.run(_decoded(SSEDecoder(), stream, reads))
        assert asyncio.run(_decoded(EventStreamDecoder(), stream, reads)) == expected
        assert _fields(list(EventStreamDecoder().iter_bytes(iter(_reads(stream, reads))))) == expected  # the sync protocol


def test_a_model_stream_one_event_per_read_gives_each_chunk_once_in_order() -> None:
    chunks = [{"choices": [{"index": 0, "delta": {"content": f"tok{n} "}}]} for n in range(50)]
    stream = b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"
    cuts, position = [], 0
    for chunk in chunks:
        position += len(f"data: {json.dumps(chunk)}\n\n".encode())
        cuts.append(position)
    decoded = asyncio.run(_decoded(EventStreamDecoder(), stream, cuts))
    assert [json.loads(data) for _, data, _, _ in decoded[:-1]] == chunks
    assert decoded[-1][1] == "[DONE]"


def test_the_shared_client_reads_its_streams_with_this_decoder() -> None:
    async def decoder_of_a_shared_client() -> object:
        return clients.shared("http://127.0.0.1:9/v1", "key", 5.0)._make_sse_decoder()

    assert isinstance(asyncio.run(decoder_of_a_shared_client()), EventStreamDecoder)
