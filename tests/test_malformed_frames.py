"""Every malformed frame gets an error frame and the connection stays usable, on the protocol
socket and on the chat page's socket; frames over the size limit get the documented error
frame even through a real daphne (whose own limit sits above ours)."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import connect_page_socket
from tests.node_client import NODE_DIR, ensure_node_deps

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
SCRIPTED = "/agents/scripted-agent/frames"


async def assert_still_usable(socket) -> None:
    await socket.send({"type": "cf_agent_stream_resume_request", "probeId": "still-ok"})
    assert (await socket.next())["type"] == "cf_agent_stream_resume_none"


@pytest.mark.parametrize("trigger", [{}, [], 7])
async def test_a_chat_request_with_a_non_string_trigger_is_answered_and_the_socket_stays_open(trigger, open_socket, token):
    socket = await open_socket(SCRIPTED, token=token, wait_ready=True)
    body = json.dumps({"messages": [], "trigger": trigger})
    await socket.send({"type": "cf_agent_use_chat_request", "id": "trig0001", "init": {"method": "POST", "body": body}})
    frame = await socket.next()
    assert frame["id"] == "trig0001" and frame["done"] is True
    await assert_still_usable(socket)


async def test_an_over_long_request_id_gets_a_clear_error(open_socket, token):
    socket = await open_socket(SCRIPTED, token=token, wait_ready=True)
    await socket.chat("r" * 300, [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}])
    frame = await socket.next()
    assert frame["error"] is True and "at most 64 characters" in frame["body"]
    await assert_still_usable(socket)


@pytest.mark.parametrize(
    "raw",
    ['[1, 2]', '"text"', "42", '{"action": ["send"]}', '{"action": {"x": 1}}', '{"action": "send", "message": {"x": 1}}', "not json", "[" * 1000 + "]" * 1000],
)
async def test_the_page_socket_answers_a_malformed_frame_with_an_error_and_stays_open(raw, user):
    page = await connect_page_socket(user, "chat-agent", "frames")
    await page.send_to(text_data=raw)
    answer = await page.receive_from(timeout=5)
    assert 'id="errors"' in answer and 'role="alert"' in answer
    await page.send_to(text_data=json.dumps({"action": "switch", "message_id": "none"}))
    await page.send_to(text_data='"again"')
    assert 'id="errors"' in await page.receive_from(timeout=5)
    await page.disconnect()


SEND_BIG_FRAME = r"""
const [url, size] = process.argv.slice(1);
const ws = new WebSocket(url);
const frames = [];
ws.onmessage = (event) => {
  const frame = JSON.parse(event.data);
  frames.push(frame);
  if (frame.type === "cf_agent_mcp_servers") {
    ws.send(JSON.stringify({type: "cf_agent_chat_messages", messages: [{id: "m", role: "user", parts: [{type: "text", text: "x".repeat(Number(size))}]}]}));
    ws.send(JSON.stringify({type: "cf_agent_stream_resume_request", probeId: "after"}));
  }
  if (frame.type === "cf_agent_stream_resume_none") { console.log(JSON.stringify({frames, open: true})); ws.close(); }
};
ws.onclose = (event) => { console.log(JSON.stringify({frames, open: false, code: event.code})); process.exit(0); };
setTimeout(() => { console.log(JSON.stringify({frames, timeout: true})); process.exit(0); }, 15000);
"""


def test_a_frame_over_the_limit_through_daphne_gets_the_documented_error_frame(live_server_process, token):
    url = f"ws://{live_server_process.host}{SCRIPTED}?token={token}"
    completed = subprocess.run(
        [str(ensure_node_deps()), "-e", SEND_BIG_FRAME, url, str(3 * 1024 * 1024 // 2)], cwd=NODE_DIR, capture_output=True, text=True, timeout=60
    )
    result = json.loads(completed.stdout.splitlines()[0])
    assert {"type": "cf_agent_error", "error": "Frame too large: the limit is 1048576 bytes."} in result["frames"]
    assert result["open"] is True
