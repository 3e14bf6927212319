"""No user can touch another user's turn: cancels are keyed by (session, request id)."""
from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async

from agents_app.turns.types import new_request_id
from agents_app.storage.models import ApiToken, Turn
from tests.conftest import is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
SCRIPTED = "/agents/scripted-agent/room"


def text_of_turn(frames: list[dict], request_id: str) -> str:
    import json

    return "".join(
        json.loads(f["body"]).get("delta", "")
        for f in frames
        if f.get("id") == request_id and f.get("body") and not f.get("error")
    )


async def test_another_user_cannot_cancel_a_running_turn_with_its_request_id(open_socket, token, other_user):
    other_token = await sync_to_async(lambda: ApiToken.issue(other_user)[1])()
    alice = await open_socket(SCRIPTED, token=token, wait_ready=True)
    bob = await open_socket(SCRIPTED, token=other_token, wait_ready=True)
    await alice.chat("alice-turn-1", [user_message("Count")], words=12, delay=0.05)
    await alice.until(lambda f: '"text-delta"' in f.get("body", ""))
    await bob.send({"type": "cf_agent_chat_request_cancel", "id": "alice-turn-1"})
    frames = await alice.until(is_done("alice-turn-1"))
    assert text_of_turn(alice.received, "alice-turn-1") == "".join(f"w{i} " for i in range(12))
    assert {"type": "abort"} not in [f for f in frames]
    status = await sync_to_async(lambda: Turn.objects.get(request_id="alice-turn-1").status)()
    assert status == "completed"


async def test_the_same_request_id_in_two_sessions_cancels_only_the_senders_turn(open_socket, token, other_user):
    other_token = await sync_to_async(lambda: ApiToken.issue(other_user)[1])()
    alice = await open_socket(SCRIPTED, token=token, wait_ready=True)
    bob = await open_socket(SCRIPTED, token=other_token, wait_ready=True)
    await alice.chat("req-1", [user_message("Count")], words=12, delay=0.05)
    await bob.chat("req-1", [user_message("Count")], words=12, delay=0.05)
    await alice.until(lambda f: '"text-delta"' in f.get("body", ""))
    await bob.until(lambda f: '"text-delta"' in f.get("body", ""))
    await bob.send({"type": "cf_agent_chat_request_cancel", "id": "req-1"})
    await bob.until(is_done("req-1"))
    await alice.until(is_done("req-1"))
    statuses = await sync_to_async(lambda: dict(Turn.objects.filter(request_id="req-1").values_list("session__owner__username", "status")))()
    assert statuses == {"alice": "completed", "bob": "aborted"}


def test_server_generated_request_ids_carry_at_least_128_bits() -> None:
    request_id = new_request_id()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", request_id)
    assert len(request_id) * 6 >= 128
    assert len({new_request_id() for _ in range(1000)}) == 1000
