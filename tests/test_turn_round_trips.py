"""Database round trips a turn costs, counted by the server (`AGENTS_COUNT_QUERIES`).

Every query before the first token is latency each user waits for, and under load each one
queues behind every other chat's: these ceilings make a change that adds round trips to
the turn path fail here, not in production. They sit a little above what was measured;
lower them when the path gets cheaper.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.db import connection

from agents_app.storage import query_count
from agents_app.testing.fake_openai import Reply
from tests.conftest import chunks_of, is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
CHAT = "/agents/chat-agent/round-trips"

# Measured (2026-12-05, afternoon), a signed-in user's turn with the Think-style chat-agent:
# 6 on SQLite and on PostgreSQL, for a new conversation's first turn too; a process's first
# turn 9 (the gateway reads its routes, limits and budgets once). 7 and 8 that morning (a new
# conversation's first turn one more: its stored features were read again after its
# instance's first start, whether or not its class has an on_start that may store some), 8
# and 9 on 2026-12-04, 13 on 2026-12-02 evening, 18 that afternoon, 29–32 that morning, 44–50
# before. What is left: admission in one transaction (SQLite's BEGIN IMMEDIATE; on
# PostgreSQL the user's row, for the per-user turn limit, and the session's row locked in
# one statement before they are read); the session's row with its agent's, what the agent
# class reads before every turn, its messages and its unfinished turns (limits and the
# session's queue), from which the turn's transcript is built and over which its agent runs;
# the user's message; the leaf and the turn lock in one write; the turn row, running,
# inserted unless its request id exists; then the stream's start (beside the model
# request). A chat with no other tab reads no transcript for the others. Statements, as
# Django runs them: on PostgreSQL the admission's transaction also costs a BEGIN and a
# COMMIT exchange, on SQLite a COMMIT.
BEFORE_FIRST_TOKEN = {
    ("sqlite", "first turn"): 9,
    ("sqlite", "later turn"): 6,
    ("postgresql", "first turn"): 9,
    ("postgresql", "later turn"): 6,
}
# Measured: 13–15 for a 3-word answer (call log, a chunk-log batch, the reply (which also
# clears the session's last failure), the outcome, the transcript for every tab, the lock,
# the chat page's queue and title), 19–23 for a
# process's first turn and when the once-a-minute chunk-log sweep falls on it; a longer
# answer adds a chunk-log write per stored batch (stream_publisher).
AFTER_FIRST_TOKEN = 26
# Calls to the database threads before the first token: each is a hand-off to a thread and
# back (~0.5 ms on an idle server), more than most statements cost. Measured (2026-12-05,
# afternoon): 2 on a session with no other turn (the admission, which then takes the turn
# lock and loads the agent, its context and a Think agent's stored features; the stream's
# start, which runs beside the model request), an instance's first turn in a process too
# when its class has no on_start (one that does may store features, so they are read after
# it: 3, as every first turn until then); 3 and 4 before the lock joined the admission's
# call, 6 before that.
CALLS_BEFORE_FIRST_TOKEN = {"first turn": 2, "later turn": 2}
# Calls after it, to the end of the run (its done frame is sent before the last few).
# Measured (2026-12-04, evening): 6 for a later turn (the stream's last chunk-log batch, the
# reply, the outcome and the model call's log line in one (storage/turn_ending.py); the
# transcript for other tabs; the lock's release; the chat page's queue and title), 9 for a
# process's first (prices, the once-a-minute chunk-log sweep); 10 and 13 when the ending
# took four and the call log one more. A longer answer adds one per chunk-log batch stored
# while it streams.
CALLS_AFTER_FIRST_TOKEN = {"first turn": 11, "later turn": 7}


@pytest.fixture(autouse=True)
def _counting(settings: Any) -> None:
    settings.AGENTS_COUNT_QUERIES = "1"


async def _counted(request_id: str) -> query_count.TurnQueries:
    """The turn's counts, recorded when its run ends (just after its done frame)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        found = [turn for turn in query_count.finished if turn.request_id == request_id]
        if found or asyncio.get_running_loop().time() > deadline:
            assert found, f"turn {request_id} recorded no query count"
            return found[-1]
        await asyncio.sleep(0.01)


async def test_a_turn_reaches_its_first_token_within_the_round_trip_budget(open_socket, token, model):
    model.script(Reply.text("One two three"), Reply.text("Four five six"))
    socket = await open_socket(CHAT, token=token, wait_ready=True)
    for request_id, text, turn in (("rt-first", "Hi", "first turn"), ("rt-second", "Again", "later turn")):
        await socket.chat(request_id, [user_message(text, f"u-{request_id}")])
        frames = await socket.until(is_done(request_id))
        assert any(chunk["type"] == "text-delta" for chunk in chunks_of(frames, request_id))
        counted = await _counted(request_id)
        assert counted.first_token_seen
        assert counted.before_first_token <= BEFORE_FIRST_TOKEN[connection.vendor, turn], counted
        assert counted.after_first_token <= AFTER_FIRST_TOKEN, counted
        assert counted.calls_before_first_token <= CALLS_BEFORE_FIRST_TOKEN[turn], counted
        assert counted.calls_after_first_token <= CALLS_AFTER_FIRST_TOKEN[turn], counted
