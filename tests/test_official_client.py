"""The official npm clients (`useAgent` + `useAgentChat`, unmodified) against a live daphne
server: what the client assembles must equal what get-messages returns afterwards."""
from __future__ import annotations

import pytest

from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.node_client import run_scenario
from tests.plugins.live_server import start_live_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


def scenario(live_server_process, token, name, agent="ChatAgent", **options):
    return run_scenario(options.pop("scenario"), host=live_server_process.host, agent=agent, name=name, token=token, **options)


def test_a_streamed_turn_assembles_exactly_what_the_server_stored(live_server_process, token, model):
    model.script(Reply.text("Hello from the fake model!", chunk_size=4, delay=0.01))
    result = scenario(live_server_process, token, "basic", scenario="basic", text="Hi")
    assert result["status"] == "ready"
    assert result["messages"] == result["serverMessages"]
    assert result["messages"][-1]["parts"][-1]["text"] == "Hello from the fake model!"


def test_custom_body_fields_reach_the_agent(live_server_process, token):
    result = scenario(live_server_process, token, "body", agent="ScriptedAgent", scenario="custom-body")
    data = next(p for p in result["serverMessages"][-1]["parts"] if p["type"] == "data-body")["data"]
    assert data == {"echo_body": True, "words": 2, "foo": "bar"}
    assert result["messages"] == result["serverMessages"]


def test_stop_cancels_the_server_turn_and_keeps_the_partial_answer(live_server_process, token, model):
    model.script(Reply.text("one two three four five six seven eight nine ten", delay=0.3))
    result = scenario(live_server_process, token, "cancel", scenario="cancel")
    assert model.wait_for_disconnect(5)
    stored = result["serverMessages"][-1]
    assert stored["role"] == "assistant"
    text = "".join(p["text"] for p in stored["parts"] if p["type"] == "text")
    assert text and "one two three four five six seven eight nine ten".startswith(text) and len(text) < 49


def test_a_client_that_reconnects_mid_stream_resumes_and_ends_with_the_full_message(live_server_process, token, model):
    model.script(Reply.text(" ".join(f"word{i}" for i in range(40)), delay=0.05))
    result = scenario(live_server_process, token, "resume", scenario="resume")
    assert result["replayed"] > 0
    assert result["messages"] == result["serverMessages"]
    assert result["messages"][-1]["parts"][-1]["text"] == " ".join(f"word{i}" for i in range(40))


def test_a_second_tab_sees_the_turn(live_server_process, token, model):
    model.script(Reply.text("Shared with every tab."))
    result = scenario(live_server_process, token, "tabs", scenario="two-clients")
    assert result["observerMessages"] == result["serverMessages"] == result["messages"]


def test_clear_history_empties_the_server_and_the_other_tab(live_server_process, token, model):
    result = scenario(live_server_process, token, "clear", scenario="clear")
    assert result["messages"] == result["otherMessages"] == result["serverMessages"] == []


def test_regenerate_replaces_the_last_answer_and_keeps_the_old_one_as_a_branch(live_server_process, token, model):
    model.script(Reply.text("First answer."), Reply.text("Second answer."))
    result = scenario(live_server_process, token, "regen", scenario="regenerate")
    assert result["firstAnswer"]["parts"][-1]["text"] == "First answer."
    assert [m["role"] for m in result["messages"]] == ["user", "assistant"]
    assert result["messages"][-1]["parts"][-1]["text"] == "Second answer."
    assert result["messages"] == result["serverMessages"]
    assert [m["parts"][-1]["text"] for m in result["branches"]] == ["First answer.", "Second answer."]


def test_a_client_reading_its_socket_in_batches_ends_with_the_regenerated_answer_as_stored(live_server_process, token, model):
    # The stream's last chunks, the done frame and the transcript reach this client together,
    # so it applies the transcript before the chunks: they must not take the branch away.
    model.script(Reply.text("First answer."), Reply.text("Second answer."))
    result = scenario(live_server_process, token, "regen-batched", scenario="regenerate", **{"batch-ms": "300"})
    assert result["messages"][-1]["metadata"]["branch"]["count"] == 2
    assert result["messages"] == result["serverMessages"]


def test_set_messages_persists_on_an_ai_chat_agent_and_reaches_other_tabs(live_server_process, token):
    result = scenario(live_server_process, token, "setmsgs", agent="MinimalChatAgent", scenario="set-messages")
    assert [m["id"] for m in result["serverMessages"]] == ["set-1", "set-2"]
    assert [m["id"] for m in result["otherMessages"]] == ["set-1", "set-2"]


def test_an_upstream_error_surfaces_as_the_chat_error(live_server_process, token, model):
    model.script(Reply.error(503, "model overloaded"))
    result = scenario(live_server_process, token, "error", scenario="error")
    assert result["status"] == "error"
    assert result["error"] == "The model service returned an error (HTTP 503): model overloaded"


def chunk_seqs(stream):
    return [f["seq"] for f in stream if f["body"]]


def test_a_reconnect_to_another_server_process_resumes_the_stream(live_server_process, token, model, settings):
    if not settings.REDIS_URL:
        pytest.skip("two processes share live frames only through channels-redis (production mode)")
    other = start_live_server(model.base_url)
    try:
        model.script(Reply.text(" ".join(f"part{i}" for i in range(40)), delay=0.05))
        result = scenario(live_server_process, token, "cross", scenario="resume", host2=other.host, observer="yes")
    finally:
        other.stop()
    assert result["replayed"] > 0
    assert result["messages"] == result["serverMessages"]
    assert result["messages"][-1]["parts"][-1]["text"] == " ".join(f"part{i}" for i in range(40))
    # The tab that resumed in the other process and the tab watching from it from the start
    # each got every chunk once, in order, then the turn's one done frame.
    resumed, observed = result["resumedStream"], result["observerStream"]
    assert chunk_seqs(observed) == list(range(len(chunk_seqs(observed))))
    assert chunk_seqs(resumed) == chunk_seqs(observed)
    assert [f for f in resumed if f["done"]] == [resumed[-1]]
    assert [f for f in observed if f["done"]] == [observed[-1]]


CONCURRENCY_OUTCOMES = {
    # Each queued message is answered in turn, its reply stored right after it.
    "queue": (["user", "assistant", "user", "assistant", "user", "assistant"], None),
    "latest": (["user", "assistant", "user", "user", "assistant"], None),
    "merge": (["user", "assistant", "user", "assistant"], "Second\n\nThird"),
    "drop": (["user", "assistant"], None),
    "debounce": (["user", "assistant", "user", "user", "assistant"], None),
}


@pytest.mark.parametrize("strategy", list(CONCURRENCY_OUTCOMES))
def test_each_concurrency_strategy_decides_which_overlapping_sends_are_answered(live_server_process, token, user, strategy):
    from agents_app.turns.instances import resolve_session
    from agents_app.storage.models import Agent

    resolve_session("scripted-agent", f"overlap-{strategy}", user)
    setting = {"strategy": "debounce", "debounceMs": 200} if strategy == "debounce" else strategy
    Agent.objects.filter(slug="scripted-agent").update(settings={"message_concurrency": setting})
    result = scenario(live_server_process, token, f"overlap-{strategy}", agent="ScriptedAgent", scenario="overlapping")
    roles, merged_text = CONCURRENCY_OUTCOMES[strategy]
    assert [m["role"] for m in result["serverMessages"]] == roles
    assert result["messages"] == result["serverMessages"]
    if merged_text:
        assert result["serverMessages"][2]["parts"][0]["text"] == merged_text


def tool_part(messages, call_id):
    return next(p for m in messages for p in m["parts"] if p.get("toolCallId") == call_id)


def test_a_server_tool_turn_streams_the_call_its_output_and_the_answer(live_server_process, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("getWeather", '{"city": "Paris"}', id="w1")]), Reply.text("Mild in Paris."))
    result = scenario(live_server_process, token, "server-tool", scenario="server-tool")
    assert result["messages"] == result["serverMessages"]
    part = tool_part(result["messages"], "w1")
    assert part["state"] == "output-available" and part["output"]["city"] == "Paris"
    assert result["messages"][-1]["parts"][-1]["text"] == "Mild in Paris."


def test_a_client_tool_answered_by_on_tool_call_continues_the_same_message(live_server_process, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("getUserTimezone", "{}", id="tz1")]), Reply.text("You are on Paris time."))
    result = scenario(live_server_process, token, "client-tool", scenario="client-tool")
    assert [c["toolName"] for c in result["toolCalls"]] == ["getUserTimezone"]
    assert result["continuations"] > 0
    assert result["messages"] == result["serverMessages"]
    assert [m["role"] for m in result["messages"]] == ["user", "assistant"]
    assert tool_part(result["messages"], "tz1")["output"] == "Europe/Paris"
    assert result["messages"][-1]["parts"][-1]["text"] == "You are on Paris time."
    assert model.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": "tz1", "content": "Europe/Paris"}


def test_approving_a_tool_call_runs_it_and_the_model_answers(live_server_process, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/a.txt"}', id="ap1")]), Reply.text("Deleted."))
    result = scenario(live_server_process, token, "approve", scenario="approval", call="ap1", decision="approve")
    assert result["requested"]["state"] == "approval-requested"
    assert result["messages"] == result["serverMessages"]
    part = tool_part(result["messages"], "ap1")
    assert part["state"] == "output-available" and part["output"] == {"path": "/tmp/a.txt", "deleted": True}
    assert result["messages"][-1]["parts"][-1]["text"] == "Deleted."


def test_denying_a_tool_call_never_runs_it_and_the_model_is_told(live_server_process, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/etc"}', id="dn1")]), Reply.text("I will not delete it."))
    result = scenario(live_server_process, token, "deny", scenario="approval", call="dn1", decision="deny")
    assert result["messages"] == result["serverMessages"]
    assert tool_part(result["messages"], "dn1")["state"] == "output-denied"
    assert model.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": "dn1", "content": "Tool execution denied by user."}
    assert result["messages"][-1]["parts"][-1]["text"] == "I will not delete it."


def test_a_pending_approval_can_be_given_from_a_new_tab_after_the_first_closed(live_server_process, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/b.txt"}', id="rc1")]), Reply.text("Done after reconnect."))
    result = scenario(live_server_process, token, "reconnect-approval", scenario="approval-after-reconnect", call="rc1")
    assert result["messages"] == result["serverMessages"]
    assert tool_part(result["messages"], "rc1")["state"] == "output-available"
    assert result["messages"][-1]["parts"][-1]["text"] == "Done after reconnect."


def test_preliminary_tool_results_stream_before_the_final_output(live_server_process, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("slow_count", '{"steps": 3}', id="pc1")]), Reply.text("Counted to three."))
    result = scenario(live_server_process, token, "prelim", agent="HookedAgent", scenario="preliminary")
    assert result["preliminary"] == [{"done": 1, "of": 3}, {"done": 2, "of": 3}]
    assert result["messages"] == result["serverMessages"]
    part = tool_part(result["messages"], "pc1")
    assert part["output"] == {"done": 3, "of": 3} and not part.get("preliminary")


def test_data_parts_reconcile_by_id_append_new_ones_and_keep_transient_ones_out(live_server_process, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("annotate", '{"label": "Example"}', id="an1")]), Reply.text("Annotated."))
    result = scenario(live_server_process, token, "data", agent="HookedAgent", scenario="data-parts")
    assert result["messages"] == result["serverMessages"]
    data_parts = [p for p in result["messages"][-1]["parts"] if p["type"].startswith("data-")]
    assert data_parts == [
        {"type": "data-progress", "id": "p1", "data": {"percent": 100}},
        {"type": "data-citation", "data": {"url": "https://example.org", "title": "Example"}},
    ]
    assert {"type": "data-notice", "data": {"text": "working"}, "transient": True} in result["received"]
