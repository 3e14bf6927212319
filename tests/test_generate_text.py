"""generate_text and stream_text: one model call outside the Think loop, through the gateway
like every other (call log, cache, per-call options)."""
from __future__ import annotations

import pytest

from agents_app.gateway.models import ModelCall
from agents_app.gateway.text import generate_text, stream_text
from agents_app.testing.fake_openai import Reply
from tests.conftest import user_message

pytestmark = pytest.mark.django_db(transaction=True)


async def test_generate_text_returns_the_whole_answer_and_its_usage(model):
    model.script(Reply.text("Rhine, Danube and Volga."))

    result = await generate_text("Name three rivers.", system="Be brief.")

    assert result.text == "Rhine, Danube and Volga." and result.finish_reason == "stop"
    assert result.usage and result.usage["outputTokens"] > 0
    assert model.requests[0]["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three rivers."},
    ]


async def test_stream_text_yields_the_deltas_as_they_come(model):
    model.script(Reply.text("one two three"))

    deltas = [delta async for delta in stream_text([user_message("Count")], model="counting-model")]

    assert len(deltas) > 1 and "".join(deltas) == "one two three"
    assert model.requests[0]["model"] == "counting-model"


async def test_every_call_leaves_a_row_in_the_gateway_call_log(model):
    model.script(Reply.text("logged"))

    await generate_text("Log me")

    call = await ModelCall.objects.aget()
    assert call.status == "ok" and call.output_tokens > 0


async def test_a_per_call_cache_ttl_serves_the_same_request_from_the_gateway_cache(model):
    model.script(Reply.text("cached answer"))

    first = await generate_text("Same question", gateway={"cache_ttl": 60})
    second = await generate_text("Same question", gateway={"cacheTtl": 60})

    assert first.text == second.text == "cached answer"
    assert len(model.requests) == 1
    assert await ModelCall.objects.filter(cache_hit=True).acount() == 1


async def test_skip_cache_goes_upstream_even_when_an_answer_is_cached(model):
    model.script(Reply.text("first"), Reply.text("second"))

    await generate_text("Again?", gateway={"cache_ttl": 60})
    fresh = await generate_text("Again?", gateway={"cache_ttl": 60, "skip_cache": True})

    assert fresh.text == "second" and len(model.requests) == 2


async def test_unknown_gateway_options_are_refused_before_any_call(model):
    with pytest.raises(ValueError, match="Unknown gateway options: colour"):
        await generate_text("Hi", gateway={"colour": "blue"})
    assert model.requests == []
