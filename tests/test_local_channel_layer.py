"""The embedded channel layer still drops what expired, though it sweeps at most once a second."""
from __future__ import annotations

import asyncio
import random

import pytest

from agents_app.transport import local_layer
from agents_app.transport.local_layer import LocalChannelLayer


async def test_a_message_past_its_expiry_is_dropped_at_the_next_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_layer, "SWEEP_INTERVAL_SECONDS", 0.05)
    layer = LocalChannelLayer(expiry=0.05)
    await layer.send("inbox", {"type": "first"})
    assert (await layer.receive("inbox"))["type"] == "first"  # swept just now
    await layer.send("inbox", {"type": "stale"})
    await asyncio.sleep(0.1)
    await layer.send("inbox", {"type": "fresh"})
    assert (await layer.receive("inbox"))["type"] == "fresh"


async def test_messages_are_delivered_in_order_between_sweeps() -> None:
    layer = LocalChannelLayer()
    await layer.group_add("session-1", "inbox")
    for index in range(3):
        await layer.group_send("session-1", {"type": "frame", "index": index})
    received = [await layer.receive("inbox") for _ in range(3)]
    assert [message["index"] for message in received] == [0, 1, 2]


async def test_each_member_of_a_group_receives_its_own_copy() -> None:
    layer = LocalChannelLayer()
    for inbox in ("first", "second"):
        await layer.group_add("session-1", inbox)
    await layer.group_send("session-1", {"type": "frame", "frames": [[0, {"body": "a"}]]})
    first, second = await layer.receive("first"), await layer.receive("second")
    first["frames"][0][1]["body"] = "changed by one consumer"
    assert second["frames"] == [[0, {"body": "a"}]]


async def test_a_member_whose_queue_is_full_misses_the_message_and_the_others_get_it() -> None:
    layer = LocalChannelLayer(capacity=1)
    for inbox in ("slow", "fast"):
        await layer.group_add("session-1", inbox)
    await layer.send("slow", {"type": "backlog"})
    await layer.group_send("session-1", {"type": "frame"})
    assert (await layer.receive("fast"))["type"] == "frame"
    assert (await layer.receive("slow"))["type"] == "backlog"


async def test_a_closed_sockets_channel_leaves_nothing_behind() -> None:
    layer = LocalChannelLayer()
    await layer.send("inbox", {"type": "frame"})
    assert (await layer.receive("inbox"))["type"] == "frame"
    waiting = asyncio.ensure_future(layer.receive("inbox"))
    await asyncio.sleep(0)
    waiting.cancel()  # what a consumer does with its pending receive when its socket closes
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert "inbox" not in layer.channels


async def test_a_receiver_gets_what_was_sent_while_it_handled_the_previous_message() -> None:
    layer = LocalChannelLayer()
    await layer.send("inbox", {"type": "first"})
    assert (await layer.receive("inbox"))["type"] == "first"
    await layer.send("inbox", {"type": "second"})
    assert (await layer.receive("inbox"))["type"] == "second"


async def test_a_socket_that_stopped_receiving_leaves_nothing_behind_after_the_next_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_layer, "SWEEP_INTERVAL_SECONDS", 0.0)
    layer = LocalChannelLayer()
    await layer.send("stopped", {"type": "frame"})
    assert (await layer.receive("stopped"))["type"] == "frame"  # its handler fails: no receive follows
    listening = asyncio.ensure_future(layer.receive("listening"))
    await asyncio.sleep(0)

    await layer.group_send("session-1", {"type": "nothing"})  # any call that sweeps

    assert "stopped" not in layer.channels
    assert "listening" in layer.channels
    await layer.send("listening", {"type": "frame"})
    assert (await listening)["type"] == "frame"


async def test_a_consumer_waiting_for_its_next_message_gets_it_from_the_send_in_order_and_its_own() -> None:
    layer = LocalChannelLayer()
    await layer.group_add("session-1", "inbox")
    await layer.group_send("session-1", {"type": "frame", "index": 0})  # queued: nobody waits yet
    assert (await layer.receive_soon("inbox"))["index"] == 0
    waiting = layer.receive_soon("inbox")
    sent = {"type": "frame", "index": 1, "frames": [[1, {"body": "b"}]]}
    await layer.group_send("session-1", sent)
    await layer.group_send("session-1", {"type": "frame", "index": 2})
    received = await waiting
    sent["frames"][0][1]["body"] = "changed by the sender"
    assert received == {"type": "frame", "index": 1, "frames": [[1, {"body": "b"}]]}
    assert (await layer.receive_soon("inbox"))["index"] == 2


async def test_a_closed_sockets_waiting_receive_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_layer, "SWEEP_INTERVAL_SECONDS", 0.0)
    layer = LocalChannelLayer()
    await layer.send("inbox", {"type": "frame"})
    assert (await layer.receive_soon("inbox"))["type"] == "frame"
    listening = layer.receive_soon("listening")
    waiting = layer.receive_soon("inbox")
    waiting.cancel()  # what a consumer does with its pending receive when its socket closes
    await asyncio.sleep(0)
    await layer.group_send("session-1", {"type": "nothing"})  # any call that sweeps
    assert "inbox" not in layer.channels
    await layer.send("listening", {"type": "frame"})  # a waiting socket is not swept away
    assert (await listening)["type"] == "frame"


async def test_channel_names_do_not_repeat_when_the_global_random_is_reseeded() -> None:
    # Hypothesis reseeds `random` for every example: a new socket must not inherit the name,
    # and so the messages, of a socket of the example before.
    layer = LocalChannelLayer()
    random.seed(0)
    first = await layer.new_channel()
    random.seed(0)
    assert await layer.new_channel() != first
