"""Row-size guard and max_persisted_messages (protocol §11.3, §11.4)."""
import pytest

from agents_app.protocol.row_size import fit_row_size
from agents_app.turns.instances import resolve_session
from agents_app.storage import client_messages, transcript
from tests.conftest import user_message


def test_small_messages_are_stored_unchanged():
    message = user_message("hello", "m1")
    assert fit_row_size(message) is message


def test_oversized_tool_outputs_are_compacted_first_and_listed_in_metadata():
    message = {
        "id": "a",
        "role": "assistant",
        "parts": [{"type": "tool-search", "toolCallId": "c1", "state": "output-available", "input": {}, "output": {"hits": "x" * 5000}}],
    }
    fitted = fit_row_size(message, limit=2000)
    assert fitted["metadata"]["compactedToolOutputs"] == ["c1"]
    assert fitted["parts"][0]["output"]["hits"].endswith("chars]") and fitted["parts"][0]["output"]["__truncated"] is True


def test_long_text_parts_are_truncated_when_still_too_large():
    message = {"id": "u", "role": "user", "parts": [{"type": "text", "text": "y" * 5000}]}
    fitted = fit_row_size(message, limit=2000)
    assert fitted["parts"][0]["text"].startswith("[Text truncated for storage (5000 chars). First 500 chars: yyy")
    assert fitted["metadata"]["compactedTextParts"] == [0]


@pytest.mark.django_db
def test_max_persisted_messages_deletes_the_oldest_and_keeps_the_rest_connected(user):
    session = resolve_session("scripted-agent", "trim", user)
    client_messages.upsert(session, [user_message(str(i), f"m{i}") for i in range(5)], move_leaf=True)
    assert transcript.trim_to(session, 3) == 2
    assert [m["id"] for m in transcript.transcript(session)] == ["m2", "m3", "m4"]
