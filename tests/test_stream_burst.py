"""Bursts of simultaneous chats through the official client (`useAgent` + `useAgentChat`,
which drive `AgentClient` + `WebSocketChatTransport`) against one daphne process: every
client sees its turn end with exactly one done frame, after every chunk exactly once and in
`seq` order, and assembles exactly what get-messages returns."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents_app.testing.fake_openai import Reply
from tests.node_client import run_scenario

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]

WORDS = [f"tok{i}" for i in range(20)]
CLIENTS = 50
ROUNDS = 3
BUDGET_SECONDS = 600
TURN_TIMEOUT_MS = 120000  # a turn that has not ended by then is reported as stuck
ARTIFACT = Path(__file__).resolve().parents[1] / "test-artifacts" / "stream-burst.json"


def stream_frames(client: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in client["received"] if f.get("type") == "cf_agent_use_chat_response" and f.get("id") == client["requestId"]]


def passes(frames: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The live pass, then one pass per replay the client asked for (a replay starts again at
    the first chunk; the live tail continues it)."""
    split = [i for i, f in enumerate(frames) if f.get("replay") and f.get("seq") == 0]
    bounds = [0, *split, len(frames)]
    return [frames[a:b] for a, b in zip(bounds, bounds[1:]) if a < b]


def problems_of(client: dict[str, Any]) -> list[str]:
    """What this client saw wrong about its own turn, in words (empty when all is well)."""
    frames = stream_frames(client)
    problems = []
    if client["stuck"]:
        problems.append(f"never saw its turn end (status {client['status']!r})")
    done = [i for i, f in enumerate(frames) if f.get("done")]
    if len(done) != 1:
        problems.append(f"{len(done)} done frames")
    elif done[0] != len(frames) - 1:
        problems.append("frames after the done frame")
    # Every pass carries each chunk once, in seq order from the first; the last one (the live
    # stream, or the replay the client acknowledged and its live tail) carries all of them.
    chunk_total = max((f["seq"] for f in frames if "seq" in f), default=-1) + 1
    chunk_passes = [[f["seq"] for f in p if f.get("body") and not f.get("error")] for p in passes(frames)]
    for seqs in chunk_passes:
        if seqs != list(range(len(seqs))):
            problems.append(f"chunk seqs {seqs}")
    if chunk_passes and len(chunk_passes[-1]) != chunk_total:
        problems.append(f"the last pass has {len(chunk_passes[-1])} of {chunk_total} chunks")
    # The message the client assembled from the stream is the one stored. (An eager client's own
    # user message can be missing from its local list: the hook swaps its chat object when the
    # socket identity arrives, a client-side race the server cannot see.)
    if last_assistant(client["messages"]) != last_assistant(client["serverMessages"]):
        problems.append("the assembled answer differs from get-messages")
    return problems


def last_assistant(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((m for m in reversed(messages) if m.get("role") == "assistant"), None)


@pytest.mark.timeout(BUDGET_SECONDS + 60)
def test_bursts_of_simultaneous_chats_each_end_with_one_done_frame_after_every_chunk(crowd_live_server, token, model):
    model.responder = lambda request: Reply.text(" ".join(WORDS), delay=0.02)
    # Each client sends as soon as its hook rendered, so its request may reach the server
    # before the hook's resume probe: the probe then finds the client's own turn starting.
    result = run_scenario(
        "burst",
        host=crowd_live_server.host,
        agent="ChatAgent",
        name="burst",
        token=token,
        timeout=BUDGET_SECONDS,
        clients=CLIENTS,
        rounds=ROUNDS,
        eager="yes",
        **{"turn-timeout": TURN_TIMEOUT_MS},
    )
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(result))  # every frame of every client, for a post-mortem
    assert [len(clients) for clients in result["rounds"]] == [CLIENTS] * ROUNDS
    failures = {
        client["name"]: {"problems": problems, "frames": summary(client)}
        for clients in result["rounds"]
        for client in clients
        if (problems := problems_of(client))
    }
    assert not failures, json.dumps(failures, indent=1)[:20000]
    answers = {"".join(p["text"] for p in c["serverMessages"][-1]["parts"] if p["type"] == "text") for r in result["rounds"] for c in r}
    assert answers == {" ".join(WORDS)}


def summary(client: dict[str, Any]) -> list[str]:
    """A client's frames in a line each, for the failure message."""
    lines = [f"> {f.get('type')} {f.get('id', f.get('probeId', ''))}" for f in client["sent"]]
    for frame in client["received"]:
        flags = [key for key in ("done", "replay", "replayComplete", "error") if frame.get(key)]
        lines.append(f"< {frame.get('type')} {frame.get('id', frame.get('probeId', ''))} seq={frame.get('seq')} {' '.join(flags)}")
    return lines
