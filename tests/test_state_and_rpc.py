"""The base agent layer: identity, state sync and @callable RPC (protocol §2)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/agents/counter-agent/room"


async def ready(open_socket, token):
    socket = await open_socket(PATH, token=token)
    frames = await socket.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    return socket, frames


async def test_a_plain_agent_sends_identity_first_then_its_initial_state(open_socket, token):
    _, frames = await ready(open_socket, token)
    assert frames == [
        {"type": "cf_agent_identity", "name": "room", "agent": "counter-agent", "stateFollows": True},
        {"type": "cf_agent_state", "state": {"count": 0}},
        {"type": "cf_agent_mcp_servers", "mcp": {"prompts": [], "resources": [], "servers": {}, "tools": []}},
    ]


async def test_a_client_state_update_reaches_the_others_but_is_not_echoed(open_socket, token):
    sender, _ = await ready(open_socket, token)
    other, _ = await ready(open_socket, token)
    await sender.send({"type": "cf_agent_state", "state": {"count": 5}})
    assert await other.next() == {"type": "cf_agent_state", "state": {"count": 5}}
    assert await sender.no_frame(0.3)
    late, frames = await ready(open_socket, token)
    assert {"type": "cf_agent_state", "state": {"count": 5}} in frames


async def test_a_rejected_state_update_gets_the_generic_error_and_no_broadcast(open_socket, token):
    sender, _ = await ready(open_socket, token)
    other, _ = await ready(open_socket, token)
    await sender.send({"type": "cf_agent_state", "state": {"count": -1}})
    assert await sender.next() == {"type": "cf_agent_state_error", "error": "State update rejected"}
    assert await other.no_frame(0.3)


async def test_rpc_calls_resolve_with_their_result_and_server_state_changes_are_broadcast(open_socket, token):
    caller, _ = await ready(open_socket, token)
    other, _ = await ready(open_socket, token)
    await caller.send({"type": "rpc", "id": "call-1", "method": "increment", "args": [3]})
    frames = [await caller.next(), await caller.next()]
    assert {"type": "rpc", "id": "call-1", "success": True, "result": 3, "done": True} in frames
    assert {"type": "cf_agent_state", "state": {"count": 3}} in frames
    assert await other.next() == {"type": "cf_agent_state", "state": {"count": 3}}


async def test_rpc_returning_none_resolves(open_socket, token):
    caller, _ = await ready(open_socket, token)
    await caller.send({"type": "rpc", "id": "call-2", "method": "echo", "args": [None]})
    assert await caller.next() == {"type": "rpc", "id": "call-2", "success": True, "result": None, "done": True}


@pytest.mark.parametrize(
    ("method", "error"),
    [
        ("nope", "Method nope does not exist"),
        ("not_exposed", "Method not_exposed is not callable"),
        ("fail", "this method always fails"),
    ],
)
async def test_rpc_errors_name_the_problem(open_socket, token, method, error):
    caller, _ = await ready(open_socket, token)
    await caller.send({"type": "rpc", "id": "call-3", "method": method, "args": []})
    assert await caller.next() == {"type": "rpc", "id": "call-3", "success": False, "error": error}


async def test_streaming_rpc_sends_each_chunk_then_the_end(open_socket, token):
    caller, _ = await ready(open_socket, token)
    await caller.send({"type": "rpc", "id": "s-1", "method": "count_to", "args": [3]})
    frames = [await caller.next() for _ in range(4)]
    assert frames == [
        {"type": "rpc", "id": "s-1", "success": True, "result": 1, "done": False},
        {"type": "rpc", "id": "s-1", "success": True, "result": 2, "done": False},
        {"type": "rpc", "id": "s-1", "success": True, "result": 3, "done": False},
        {"type": "rpc", "id": "s-1", "success": True, "result": "done", "done": True},
    ]


async def test_a_streaming_rpc_that_raises_ends_with_one_error(open_socket, token):
    caller, _ = await ready(open_socket, token)
    await caller.send({"type": "rpc", "id": "s-2", "method": "break_midway", "args": []})
    assert await caller.next() == {"type": "rpc", "id": "s-2", "success": True, "result": 1, "done": False}
    assert await caller.next() == {"type": "rpc", "id": "s-2", "success": False, "error": "stream broke"}
    assert await caller.no_frame(0.3)


async def test_a_readonly_connection_cannot_change_state_but_still_sees_it(open_socket, token):
    viewer = await open_socket(PATH, token=token, query="mode=readonly")
    await viewer.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    writer, _ = await ready(open_socket, token)
    await viewer.send({"type": "cf_agent_state", "state": {"count": 9}})
    assert await viewer.next() == {"type": "cf_agent_state_error", "error": "Connection is readonly"}
    await viewer.send({"type": "rpc", "id": "ro-1", "method": "increment", "args": [1]})
    assert await viewer.next() == {"type": "rpc", "id": "ro-1", "success": False, "error": "Connection is readonly"}
    await viewer.send({"type": "rpc", "id": "ro-2", "method": "echo", "args": ["read"]})
    assert (await viewer.next())["result"] == "read"
    await writer.send({"type": "cf_agent_state", "state": {"count": 2}})
    assert await viewer.next() == {"type": "cf_agent_state", "state": {"count": 2}}


async def test_a_connection_without_protocol_messages_gets_no_connect_frames_or_state_but_can_call(open_socket, token):
    silent = await open_socket(PATH, token=token, query="mode=silent")
    assert await silent.no_frame(0.3)
    writer, _ = await ready(open_socket, token)
    await writer.send({"type": "cf_agent_state", "state": {"count": 4}})
    assert await silent.no_frame(0.3)
    await silent.send({"type": "rpc", "id": "q-1", "method": "increment", "args": [1]})
    assert await silent.next() == {"type": "rpc", "id": "q-1", "success": True, "result": 5, "done": True}
