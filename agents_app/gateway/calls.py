"""One model call through the gateway: limits, cache, routing with fallbacks, the call log.

`GatewayCall(client, request)` is an async iterator of the upstream's chat.completions
chunks, as JSON objects (live, or replayed from the cache). A connection error, timeout, 429 or 5xx moves on to the
next upstream of the route as long as nothing has reached the caller yet (no content,
reasoning or tool call); after that, or on the last upstream, the failure is a ModelError
with a readable, key-free message. Every call leaves one ModelCall row.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
from django.utils import timezone

from agents_app.gateway import call_log, limits, response_cache, routing, scope
from agents_app.gateway.call_log import CallRecord
from agents_app.gateway.models import ModelCall
from agents_app.providers import clients
from agents_app.providers.errors import ModelError, describe_error, redact
from agents_app.providers.openai_chat import ChatChunk, stream_chat_chunks
from agents_app.storage.db_threads import db_async
from agents_app.testing import timeline

# Log writes nothing awaits, referenced until they finish (asyncio keeps weak references).
_writing: set[asyncio.Future[None]] = set()
BROKE_OFF = "The connection to the model service broke off mid-answer. Please try again."


def _retryable(error: openai.OpenAIError) -> bool:
    if isinstance(error, openai.APIConnectionError):  # includes timeouts
        return True
    return isinstance(error, openai.APIStatusError) and (error.status_code == 429 or error.status_code >= 500)


def _has_output(chunk: ChatChunk) -> bool:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content") or delta.get("reasoning"):
            return True
    return False


def _prepare(record: CallRecord, model: str, caller: scope.Caller | None, gateway_id: str | None, earlier: list[CallRecord]) -> routing.Plan:
    """What the gateway reads before the upstream call, in one trip to a worker thread,
    after writing the `earlier` calls' log lines that a turn held (limits count them)."""
    call_log.save_all(earlier)
    caller = caller or scope.load_caller(record.session_id)
    record.agent, record.user_id = caller.agent, caller.user_id
    if caller.limited:
        try:
            limits.check(record.user_id, record.agent, reserve=True)
        except limits.LimitExceeded as refusal:
            record.status, record.error = ModelCall.Status.REFUSED, str(refusal)
            raise
    if gateway_id is None:
        return caller.route.plan(model)
    try:
        return routing.named_route(gateway_id).plan(model)
    except routing.UnknownGateway as error:
        raise ModelError(str(error)) from error


def _milliseconds_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


class GatewayCall:
    def __init__(self, client: openai.AsyncOpenAI, request: dict[str, Any]) -> None:
        self._client = client
        self._request = request

    async def __aiter__(self) -> AsyncIterator[ChatChunk]:
        call_scope = scope.current()
        start = time.monotonic()
        record = CallRecord(
            started_at=timezone.now(), session_id=call_scope.session_id, request_id=call_scope.request_id, model=self._request.get("model", "")
        )
        try:
            caller, model, gateway_id = call_scope.caller, self._request.get("model", ""), call_scope.options.gateway_id
            # The turn's earlier calls (a step before a tool ran): their log lines go now.
            held = call_scope.held_calls.take() if call_scope.held_calls is not None else []
            if caller is not None and not caller.limited and gateway_id is None:
                # Nothing to enforce or look up: no database round trip before the first token.
                plan = _prepare(record, model, caller, gateway_id, [])
                if held:  # written beside this call's request: nothing waits for them
                    _writing.add(task := asyncio.ensure_future(db_async(call_log.save_all)(held)))
                    task.add_done_callback(_writing.discard)
            else:
                plan = await db_async(_prepare)(record, model, caller, gateway_id, held)
            ttl = call_scope.options.cache_ttl if call_scope.options.cache_ttl is not None else plan.cache_ttl
            cache_key = response_cache.key_for(self._request) if ttl > 0 else None
            if cache_key is not None and not call_scope.options.skip_cache:
                cached = await response_cache.load(cache_key)
                if cached is not None:
                    async for chunk in self._replay(cached, record, start):
                        yield chunk
                    return
            async for chunk in self._through_route(plan, record, start, cache_key, ttl):
                yield chunk
        except ModelError as error:
            if record.status == ModelCall.Status.OK:
                record.status, record.error = ModelCall.Status.ERROR, str(error)
            raise
        except BaseException:
            # Cancelled by the turn (the user pressed stop) or the process is going down.
            record.status, record.error = ModelCall.Status.ABORTED, "The call was cancelled."
            raise
        finally:
            record.latency_ms = _milliseconds_since(start)
            if call_scope.held_calls is None or not call_scope.held_calls.hold(record):
                await db_async(call_log.save)(record)

    async def _replay(self, cached: dict[str, Any], record: CallRecord, start: float) -> AsyncIterator[ChatChunk]:
        record.cache_hit = True
        record.provider, record.model = cached["provider"], cached["model"]
        for chunk in cached["chunks"]:
            if record.ttft_ms is None and _has_output(chunk):
                record.ttft_ms = _milliseconds_since(start)
            self._count_usage(chunk, record)
            yield chunk

    async def _through_route(
        self, plan: routing.Plan, record: CallRecord, start: float, cache_key: str | None, ttl: int
    ) -> AsyncIterator[ChatChunk]:
        for position, upstream in enumerate(plan.upstreams):
            record.provider, record.model = upstream.provider, upstream.model
            emitted = False
            served: list[dict[str, Any]] = []
            try:
                client = self._client
                if not upstream.uses_default_client:
                    client = clients.shared(upstream.base_url, upstream.api_key, upstream.timeout)
                if record.request_id:
                    timeline.mark(record.request_id, "model_request")
                stream = await stream_chat_chunks(client, {**self._request, "model": upstream.model})
                async with stream:
                    async for chunk in stream:
                        if not emitted and _has_output(chunk):
                            emitted = True
                            record.ttft_ms = _milliseconds_since(start)
                            if record.request_id:
                                timeline.mark(record.request_id, "upstream_output")
                        self._count_usage(chunk, record)
                        if cache_key is not None:
                            served.append(chunk)
                        yield chunk
            except openai.OpenAIError as error:
                message = redact(describe_error(error), plan.secrets)
                if not emitted and _retryable(error) and position < len(plan.upstreams) - 1:
                    record.fallbacks.append({"provider": upstream.provider, "model": upstream.model, "error": message})
                    continue
                if emitted and isinstance(error, openai.APIConnectionError) and not isinstance(error, openai.APITimeoutError):
                    message = BROKE_OFF
                raise ModelError(message) from error
            if cache_key is not None:
                await response_cache.store(cache_key, {"provider": upstream.provider, "model": upstream.model, "chunks": served}, ttl)
            return

    @staticmethod
    def _count_usage(chunk: ChatChunk, record: CallRecord) -> None:
        usage = chunk.get("usage")
        if usage:
            record.input_tokens = usage.get("prompt_tokens") or 0
            record.output_tokens = usage.get("completion_tokens") or 0
