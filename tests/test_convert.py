"""UIMessages → chat-completions messages (protocol §10.6)."""
from agents_app.providers.convert import DENIED_TOOL_TEXT, to_openai_messages


def test_user_and_assistant_text_with_a_system_prompt():
    messages = [
        {"id": "u", "role": "user", "parts": [{"type": "text", "text": "Hi"}]},
        {"id": "a", "role": "assistant", "parts": [{"type": "step-start"}, {"type": "reasoning", "text": "hmm"}, {"type": "text", "text": "Hello"}]},
    ]
    assert to_openai_messages(messages, "Be kind") == [
        {"role": "system", "content": "Be kind"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]


def test_assistant_steps_split_into_tool_calls_and_tool_results():
    message = {
        "id": "a",
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {"type": "tool-getWeather", "toolCallId": "c1", "state": "output-available", "input": {"city": "Paris"}, "output": {"t": 21}},
            {"type": "tool-deleteFile", "toolCallId": "c2", "state": "output-denied", "input": {"path": "/x"}, "approval": {"id": "p", "approved": False}},
            {"type": "step-start"},
            {"type": "text", "text": "It is 21."},
        ],
    }
    assert to_openai_messages([message]) == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "getWeather", "arguments": '{"city": "Paris"}'}},
                {"id": "c2", "type": "function", "function": {"name": "deleteFile", "arguments": '{"path": "/x"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"t": 21}'},
        {"role": "tool", "tool_call_id": "c2", "content": DENIED_TOOL_TEXT},
        {"role": "assistant", "content": "It is 21."},
    ]


def test_unanswered_tool_calls_are_left_out():
    message = {"id": "a", "role": "assistant", "parts": [{"type": "tool-x", "toolCallId": "c", "state": "input-available", "input": {}}]}
    assert to_openai_messages([message]) == []
