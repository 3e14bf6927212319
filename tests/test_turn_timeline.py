"""A turn's way to its first frame, traced on demand (`AGENTS_TURN_TIMELINE`): one line per
step, in the order the turn passed them, on the clock a load client on the same machine
reads too."""
from __future__ import annotations

import time
from typing import Any

import pytest

from agents_app.testing import timeline
from agents_app.testing.fake_openai import Reply
from tests.conftest import is_done, user_message

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_traced_turn_records_each_step_to_its_first_frame_in_order(open_socket, token, model, settings: Any, tmp_path):
    settings.AGENTS_TURN_TIMELINE = str(tmp_path / "timeline.txt")
    model.script(Reply.text("Traced all the way"))
    socket = await open_socket("/agents/chat-agent/traced", token=token, wait_ready=True)
    sent = time.perf_counter()
    await socket.chat("traced-1", [user_message("Hi")])
    await socket.until(is_done("traced-1"))

    marks = timeline.read(settings.AGENTS_TURN_TIMELINE)["traced-1"]
    assert list(marks) == list(timeline.STEPS)
    times = [marks[step] for step in timeline.STEPS]
    assert sent <= times[0] and times == sorted(times) and times[-1] <= time.perf_counter()


async def test_a_turn_run_while_tracing_is_off_adds_nothing_to_the_timeline(open_socket, token, model, settings: Any, tmp_path):
    traced = str(tmp_path / "timeline.txt")
    model.script(Reply.text("Traced"), Reply.text("Not traced"))
    socket = await open_socket("/agents/chat-agent/untraced", token=token, wait_ready=True)
    settings.AGENTS_TURN_TIMELINE = traced
    await socket.chat("traced-2", [user_message("Hi")])
    await socket.until(is_done("traced-2"))
    settings.AGENTS_TURN_TIMELINE = ""
    await socket.chat("untraced-1", [user_message("Again")])
    await socket.until(is_done("untraced-1"))

    assert list(timeline.read(traced)) == ["traced-2"]
