"""A connection that closes never takes another connection's frame with it (channels-redis).

The sockets of a process take turns taking the process's next message off Redis, whoever it
is for. Channels cancels a socket's receive when the socket closes; one cancelled after Redis
handed it a message lost that message, so another client missed a frame (a stream's end: it
waited for ever). The layer is driven directly, against a Redis server of the test's own.
"""
from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
import redis.asyncio
from django.conf import settings

from agents_app.transport.resilient_layer import ResilientRedisChannelLayer

pytestmark = pytest.mark.backends

END = {"type": "agent.stream_end", "request_id": "req-1", "frames": [], "chunk_total": 0}


@pytest.fixture(autouse=True)
def _production_pass_only() -> None:
    if not settings.REDIS_URL:
        pytest.skip("runs in the production-mode pass, where channels-redis is the channel layer")


@pytest.fixture
def layer(throwaway_redis: Any) -> ResilientRedisChannelLayer:
    return ResilientRedisChannelLayer(hosts=[throwaway_redis.url], prefix=f"test-{uuid.uuid4().hex[:8]}")


async def closing_socket_waits_for_the_next_message(layer: ResilientRedisChannelLayer) -> asyncio.Task[Any]:
    """A socket's receive, once it is the one waiting on Redis for the process's next message."""
    receiving = asyncio.ensure_future(layer.receive(await layer.new_channel()))
    server = redis.asyncio.Redis.from_url(layer.hosts[0]["address"])
    while (await server.info("clients"))["blocked_clients"] == 0:
        await asyncio.sleep(0.01)
    await server.aclose()
    return receiving


def send_from_another_process(layer: ResilientRedisChannelLayer, channel: str, message: dict[str, Any]) -> None:
    """A Celery worker or another daphne sends, while this process's event loop runs nothing."""
    sender = ResilientRedisChannelLayer(hosts=layer.hosts, prefix=layer.prefix)
    thread = threading.Thread(target=asyncio.run, args=(sender.send(channel, message),))
    thread.start()
    thread.join()


async def test_a_frame_redis_handed_to_a_closing_socket_reaches_the_socket_it_is_for(layer):
    watching = await layer.new_channel()
    closing = await closing_socket_waits_for_the_next_message(layer)

    # Redis hands the frame to the closing socket's receive, which closes before it can read it.
    send_from_another_process(layer, watching, END)
    closing.cancel()

    assert await asyncio.wait_for(layer.receive(watching), 5) == END
    await layer.flush()


async def test_a_socket_that_closes_while_nothing_comes_leaves_the_others_receiving(layer):
    watching = await layer.new_channel()
    closing = await closing_socket_waits_for_the_next_message(layer)

    closing.cancel()
    await asyncio.sleep(0.1)
    send_from_another_process(layer, watching, END)

    assert await asyncio.wait_for(layer.receive(watching), 5) == END
    await layer.flush()
