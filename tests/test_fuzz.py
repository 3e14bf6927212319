"""Property-based fuzzing of both sockets and the HTTP endpoints (hypothesis): whatever a
client sends, the server answers, the connection stays usable, no task exception is logged,
and a known-good conversation of the same user is unchanged afterwards."""
from __future__ import annotations

import gc
import json
import logging
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from agents_app.turns import turn_listeners
from agents_app.turns.instances import resolve_session
from agents_app.storage import client_messages, db_threads, transcript
from tests.conftest import connect_page_socket, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
FUZZ = hypothesis_settings(
    max_examples=120, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROTOCOL_TYPES = [
    "cf_agent_use_chat_request", "cf_agent_chat_request_cancel", "cf_agent_chat_clear", "cf_agent_chat_messages",
    "cf_agent_tool_result", "cf_agent_tool_approval", "cf_agent_stream_resume_request", "cf_agent_stream_resume_ack",
    "cf_agent_state", "rpc", "cf_agent_unknown",
]
FIELDS = ["id", "init", "messages", "toolCallId", "toolName", "output", "state", "approved", "autoContinue", "probeId", "method", "args", "clientTools", "errorText"]
PAGE_ACTIONS = ["send", "stop", "approve", "reject", "regenerate", "switch", "edit", "tool_result", "bogus"]

scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
parts = st.fixed_dictionaries({"type": st.sampled_from(["text", "reasoning", "tool-x", "dynamic-tool", "file", "step-start", "data-x"])}, optional={
    "text": json_values, "toolCallId": json_values, "state": st.sampled_from(["input-available", "output-available", "nope"]) | json_values,
    "input": json_values, "output": json_values, "url": json_values,
})
messages = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "wizard"])}, optional={
    "id": st.text(max_size=12) | json_values, "parts": st.lists(parts, max_size=3) | json_values, "metadata": json_values,
})
chat_bodies = st.fixed_dictionaries({}, optional={
    "messages": st.lists(messages, max_size=3) | json_values, "trigger": st.sampled_from(["submit-message", "regenerate-message"]) | json_values,
    "clientTools": json_values,
})
chat_requests = st.builds(
    lambda request_id, body, raw: {"type": "cf_agent_use_chat_request", "id": request_id, "init": {"method": "POST", "body": raw if raw is not None else json.dumps(body)}},
    st.text(min_size=1, max_size=80), chat_bodies, st.none() | st.text(max_size=20),
)
frames = st.one_of(
    chat_requests,
    st.builds(lambda kind, fields: {"type": kind, **fields}, st.sampled_from(PROTOCOL_TYPES), st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4)),
    json_values,
).map(lambda frame: json.dumps(frame)) | st.text(min_size=1, max_size=60) | st.just("[" * 900 + "]" * 900)


class TaskExceptions(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "Task exception was never retrieved" in record.getMessage() or "Task was destroyed" in record.getMessage():
            self.seen.append(record.getMessage())


@pytest.fixture
def task_exceptions():
    # What earlier tests' closed loops left pending (a listener of a turn that outlived its
    # test) is destroyed now, not reported as this test's: once the database threads have let
    # go of the calls such a task still waited for, nothing holds it any more.
    db_threads.executor().run_on_every_thread(lambda: None, timeout=10)
    turn_listeners.forget_closed_loops()
    gc.collect()
    handler = TaskExceptions()
    logging.getLogger("asyncio").addHandler(handler)
    yield handler
    gc.collect()
    logging.getLogger("asyncio").removeHandler(handler)
    assert handler.seen == []


@pytest.fixture
def known_good(user: Any) -> Any:
    """Another conversation of the same user, which no fuzzed frame may change."""
    session = resolve_session("scripted-agent", "known-good", user)
    client_messages.upsert(session, [user_message("Hello", "kg-1"), {"id": "kg-2", "role": "assistant", "parts": [{"type": "text", "text": "Hi!"}]}], move_leaf=True)
    before = transcript.transcript(session)
    yield before
    assert transcript.transcript(resolve_session("scripted-agent", "known-good", user)) == before


@pytest.fixture
def relaxed_limits(settings: Any) -> None:
    settings.AGENTS_MAX_FRAMES_PER_SECOND = 0  # the fuzzer sends as fast as it can, on purpose


async def answers_probe(socket: Any, probe_id: str) -> None:
    await socket.send({"type": "cf_agent_stream_resume_request", "probeId": probe_id})
    await socket.until(lambda f: f.get("probeId") == probe_id, timeout=20)


@FUZZ
@given(raw=frames)
async def test_the_protocol_socket_survives_any_frame(raw, open_socket, token, known_good, task_exceptions, relaxed_limits):
    socket = await open_socket("/agents/scripted-agent/fuzz", token=token, wait_ready=True)
    await socket.send_raw(raw)
    await answers_probe(socket, "after-fuzz")
    await socket.close()


def page_frames() -> Any:
    fields = st.dictionaries(st.sampled_from(["message", "message_id", "tool_call_id", "tool_name", "output", "error", "always", "HEADERS"]), json_values, max_size=4)
    objects = st.builds(lambda action, rest: {"action": action, **rest}, st.sampled_from(PAGE_ACTIONS) | json_values, fields)
    return (objects | json_values).map(json.dumps) | st.text(min_size=1, max_size=40)


@FUZZ
@given(raw=page_frames())
async def test_the_page_socket_survives_any_frame(raw, user, known_good, task_exceptions):
    page = await connect_page_socket(user, "scripted-agent", "fuzz")
    await page.send_to(text_data=raw)
    await page.send_to(text_data='"liveness"')
    while "The page sent a message the server cannot read." not in await page.receive_from(timeout=20):
        pass  # turn updates may come first; the notice for the liveness frame always follows
    await page.disconnect()


http_bodies = st.one_of(
    st.fixed_dictionaries({}, optional={"text": json_values, "messages": st.lists(messages, max_size=2) | json_values, "body": json_values, "requestId": json_values}),
    json_values,
).map(json.dumps) | st.text(max_size=40)
http_paths = st.sampled_from(["chat?format=json", "get-messages", "switch-branch", "search?q=x", "streams/abc", "elsewhere"])


@FUZZ
@given(path=http_paths, body=http_bodies, method=st.sampled_from(["GET", "POST"]))
def test_the_http_endpoints_answer_any_body_without_a_server_error(path, body, method, token, known_good, model):
    client = Client()
    url = f"/agents/scripted-agent/fuzz/{path}{'&' if '?' in path else '?'}token={token}"
    response = client.get(url) if method == "GET" else client.post(url, data=body, content_type="application/json")
    assert response.status_code < 500
    completions = client.post(f"/v1/chat/completions?token={token}", data=body, content_type="application/json")
    assert completions.status_code < 500
