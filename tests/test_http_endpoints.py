"""HTTP side of an agent instance (protocol §7) and who may see what."""
from __future__ import annotations

import pytest

from agents_app.turns.instances import resolve_session
from agents_app.storage import client_messages
from agents_app.storage.models import ApiToken
from tests.conftest import user_message

# The endpoints query on the database threads (other connections): test data is committed.
pytestmark = pytest.mark.django_db(transaction=True)


def test_get_messages_of_a_fresh_instance_is_an_empty_array(client, token):
    response = client.get(f"/agents/chat-agent/fresh/get-messages?token={token}")
    assert response.status_code == 200 and response.json() == []


def test_get_messages_returns_the_conversation_in_order(client, token, user):
    session = resolve_session("minimal-chat-agent", "ordered", user)
    client_messages.upsert(session, [user_message("one", "m1"), user_message("two", "m2"), user_message("three", "m3")], move_leaf=True)
    response = client.get(f"/agents/minimal-chat-agent/ordered/get-messages?token={token}")
    assert [m["id"] for m in response.json()] == ["m1", "m2", "m3"]


def test_get_messages_accepts_a_bearer_token(client, token):
    response = client.get("/agents/chat-agent/fresh/get-messages", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_get_messages_with_the_session_cookie(client, user):
    client.force_login(user)
    assert client.get("/agents/chat-agent/fresh/get-messages").status_code == 200


def test_unauthenticated_requests_are_refused(client):
    response = client.get("/agents/chat-agent/fresh/get-messages")
    assert response.status_code == 401 and "Authentication required" in response.json()["error"]


def test_an_unknown_agent_segment_is_a_400(client, token):
    response = client.get(f"/agents/no-such-agent/room/get-messages?token={token}")
    assert response.status_code == 400 and response.content == b"Invalid request"


def test_paths_outside_an_instance_are_not_agent_routes(client, token):
    assert client.get("/agents/chat-agent").status_code == 404


def test_other_paths_reach_on_request_which_defaults_to_not_implemented(client, token):
    response = client.get(f"/agents/chat-agent/room/some/nested/path?token={token}")
    assert response.status_code == 404 and response.content == b"Not implemented"


def test_users_never_see_each_others_conversations(client, user, other_user):
    mine = resolve_session("chat-agent", "default", user)
    client_messages.upsert(mine, [user_message("my secret", "s1")], move_leaf=True)
    _, other_token = ApiToken.issue(other_user)
    response = client.get(f"/agents/chat-agent/default/get-messages?token={other_token}")
    assert response.json() == []


def test_api_tokens_are_stored_only_as_hashes(user):
    token, raw_key = ApiToken.issue(user)
    assert raw_key not in (token.key_hash, token.prefix) and token.key_hash == ApiToken.hash_key(raw_key)
