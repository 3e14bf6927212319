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
