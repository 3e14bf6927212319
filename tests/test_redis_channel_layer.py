"""The production channel layer hands messages to this process's channels inside the process
and uses Redis only for channels of other processes (transport/resilient_layer.py).

Each layer instance stands for one server process: instances have their own process prefix,
so channels of one are "elsewhere" for the other, exactly as between two daphne processes."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.conf import settings

from agents_app.transport.resilient_layer import ResilientRedisChannelLayer

pytestmark = pytest.mark.backends

GROUP = "agent-session.layer-test"


@pytest.fixture
async def processes() -> AsyncIterator[tuple[ResilientRedisChannelLayer, ResilientRedisChannelLayer]]:
    if not settings.REDIS_URL:
        pytest.skip("needs Redis (production mode)")
    here = ResilientRedisChannelLayer(hosts=[settings.REDIS_URL], prefix="layer-test")
    elsewhere = ResilientRedisChannelLayer(hosts=[settings.REDIS_URL], prefix="layer-test")
    await here.flush()
    yield here, elsewhere
    await here.flush()
    await here.close_pools()
    await elsewhere.close_pools()


async def _keys(layer: ResilientRedisChannelLayer) -> list[bytes]:
    return [key for key in await layer.connection(0).keys("layer-test*") if b":group:" not in key]


async def test_a_group_message_for_a_channel_of_this_process_never_goes_through_redis(processes: Any) -> None:
    here, _ = processes
    channel = await here.new_channel()
    await here.group_add(GROUP, channel)
    await here.group_send(GROUP, {"type": "agent.frames", "frames": [1]})
    assert await _keys(here) == []  # nothing was queued in Redis for it
    assert (await asyncio.wait_for(here.receive(channel), 2))["frames"] == [1]


async def test_a_local_message_wakes_a_receiver_that_waits_on_redis(processes: Any) -> None:
    here, _ = processes
    channel = await here.new_channel()
    await here.group_add(GROUP, channel)
    receiving = asyncio.ensure_future(here.receive(channel))
    await asyncio.sleep(0.2)  # the receiver is blocked in its read from Redis by now
    await here.send(channel, {"type": "agent.direct", "text": "hello"})
    assert (await asyncio.wait_for(receiving, 2))["text"] == "hello"


async def test_members_in_another_process_get_group_messages_through_redis_and_local_ones_once(processes: Any) -> None:
    here, elsewhere = processes
    local, remote = await here.new_channel(), await elsewhere.new_channel()
    await here.group_add(GROUP, local)
    await elsewhere.group_add(GROUP, remote)
    await here.group_send(GROUP, {"type": "agent.stream", "frames": [[0, {}]]})
    await here.group_send(GROUP, {"type": "agent.stream_end", "frames": []})
    assert [(await asyncio.wait_for(elsewhere.receive(remote), 2))["type"] for _ in range(2)] == ["agent.stream", "agent.stream_end"]
    assert [(await asyncio.wait_for(here.receive(local), 2))["type"] for _ in range(2)] == ["agent.stream", "agent.stream_end"]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(here.receive(local), 0.3)


async def test_a_member_that_joined_elsewhere_a_moment_ago_gets_every_control_message(processes: Any) -> None:
    """Live stream frames may reuse the last second's membership (a missed one is read back from
    the chunk log); anything else reads who is in the group each time."""
    here, elsewhere = processes
    local = await here.new_channel()
    await here.group_add(GROUP, local)
    await here.group_send(GROUP, {"type": "agent.stream", "frames": []})  # membership read: only `local`
    late = await elsewhere.new_channel()
    await elsewhere.group_add(GROUP, late)
    await here.group_send(GROUP, {"type": "agent.stream_end", "frames": []})
    assert (await asyncio.wait_for(elsewhere.receive(late), 2))["type"] == "agent.stream_end"
