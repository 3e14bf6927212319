"""The server's copy of a streaming message, built from UI chunks (protocol §10.5, §10.7)."""
import json

from agents_app.protocol.message_builder import MessageBuilder, rebuild_message


def build(chunks, **kwargs):
    builder = MessageBuilder({"id": "m1", "role": "assistant", "parts": []}, **kwargs)
    sent = []
    for chunk in chunks:
        rewritten = builder.rewrite(chunk)
        if rewritten is not None:
            builder.apply(rewritten)
            sent.append(rewritten)
    return builder.finalize(), sent


def test_text_deltas_assemble_into_one_finished_text_part():
    message, _ = build(
        [
            {"type": "start"},
            {"type": "start-step"},
            {"type": "text-start", "id": "t"},
            {"type": "text-delta", "id": "t", "delta": "Hel"},
            {"type": "text-delta", "id": "t", "delta": "lo!"},
            {"type": "text-end", "id": "t"},
            {"type": "finish-step"},
            {"type": "finish", "finishReason": "stop"},
        ]
    )
    assert message["parts"] == [{"type": "step-start"}, {"type": "text", "text": "Hello!", "state": "done"}]
    assert message["metadata"] == {"finishReason": "stop"}


def test_start_without_message_id_is_stamped_with_the_server_id():
    _, sent = build([{"type": "start"}])
    assert sent == [{"type": "start", "messageId": "m1"}]


def test_provider_message_id_is_adopted_as_the_persisted_id():
    message, sent = build([{"type": "start", "messageId": "provider-id"}])
    assert message["id"] == "provider-id" and sent[0]["messageId"] == "provider-id"


def test_continuation_start_carries_no_message_id():
    _, sent = build([{"type": "start", "messageId": "x"}], continuation=True)
    assert sent == [{"type": "start"}]


def test_think_flavour_forwards_finish_unchanged():
    _, sent = build([{"type": "finish", "finishReason": "stop"}], finish_reason_in_metadata=False)
    assert sent == [{"type": "finish", "finishReason": "stop"}]


def test_tool_call_input_then_output():
    message, _ = build(
        [
            {"type": "tool-input-start", "toolCallId": "c1", "toolName": "getWeather"},
            {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '{"city":"Paris"}'},
            {"type": "tool-input-available", "toolCallId": "c1", "toolName": "getWeather", "input": {"city": "Paris"}},
            {"type": "tool-output-available", "toolCallId": "c1", "output": {"tempC": 21}},
        ]
    )
    assert message["parts"] == [
        {"type": "tool-getWeather", "toolCallId": "c1", "state": "output-available", "input": {"city": "Paris"}, "output": {"tempC": 21}}
    ]


def test_replayed_tool_input_start_for_a_settled_call_is_dropped():
    _, sent = build(
        [
            {"type": "tool-input-available", "toolCallId": "c1", "toolName": "t", "input": {}},
            {"type": "tool-output-available", "toolCallId": "c1", "output": 1},
            {"type": "tool-input-start", "toolCallId": "c1", "toolName": "t"},
            {"type": "tool-approval-request", "toolCallId": "c1", "approvalId": "a"},
        ]
    )
    assert [c["type"] for c in sent] == ["tool-input-available", "tool-output-available"]


def test_data_parts_reconcile_by_id_append_new_and_skip_transient():
    message, _ = build(
        [
            {"type": "data-progress", "id": "p", "data": {"percent": 10}},
            {"type": "data-progress", "id": "p", "data": {"percent": 90}},
            {"type": "data-progress", "id": "q", "data": {"percent": 1}},
            {"type": "data-note", "data": "hidden", "transient": True},
        ]
    )
    assert message["parts"] == [
        {"type": "data-progress", "id": "p", "data": {"percent": 90}},
        {"type": "data-progress", "id": "q", "data": {"percent": 1}},
    ]


def test_a_message_is_rebuilt_from_its_stored_chunk_log():
    bodies = [
        json.dumps(c)
        for c in [
            {"type": "start", "messageId": "m9"},
            {"type": "text-start", "id": "t"},
            {"type": "text-delta", "id": "t", "delta": "partial"},
        ]
    ]
    message = rebuild_message("m9", bodies)
    assert message["id"] == "m9"
    assert message["parts"] == [{"type": "text", "text": "partial", "state": "streaming"}]
