"""The database threads' CPU by function, recorded on demand (`AGENTS_DB_CPU`) for load runs:
each call counted once, under the function it ran, while the setting names a directory."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from agents_app.testing import db_cpu
from agents_app.testing.fake_openai import Reply
from tests.conftest import is_done, user_message

pytestmark = pytest.mark.django_db(transaction=True)


async def recorded(directory: Path, name: str, calls: int) -> list[float]:
    """`name`'s totals once the process has written `calls` calls of it (or after 5 s)."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        total = db_cpu.read(directory, [os.getpid()]).get(name, [0, 0.0])
        if total[0] >= calls or asyncio.get_running_loop().time() > deadline:
            return total
        await asyncio.sleep(0.05)


async def test_a_recorded_turn_counts_its_admission_and_the_cpu_it_took(open_socket, token, model, settings: Any, tmp_path: Path) -> None:
    settings.AGENTS_DB_CPU = str(tmp_path)
    model.script(Reply.text("Counted"))
    socket = await open_socket("/agents/chat-agent/cpu", token=token, wait_ready=True)
    await socket.chat("cpu-1", [user_message("Hi")])
    await socket.until(is_done("cpu-1"))

    calls, seconds = await recorded(tmp_path, "chat._accept", 1)
    assert calls == 1
    assert seconds > 0


async def test_calls_made_while_recording_is_off_are_not_counted(open_socket, token, model, settings: Any, tmp_path: Path) -> None:
    model.script(Reply.text("Counted"), Reply.text("Not counted"))
    socket = await open_socket("/agents/chat-agent/cpu-off", token=token, wait_ready=True)
    settings.AGENTS_DB_CPU = str(tmp_path)
    await socket.chat("cpu-2", [user_message("Hi")])
    await socket.until(is_done("cpu-2"))
    settings.AGENTS_DB_CPU = ""
    await socket.chat("cpu-3", [user_message("Again")])
    await socket.until(is_done("cpu-3"))
    await asyncio.sleep(3 * db_cpu.RECORD_INTERVAL)  # a second admission would be written by now

    assert db_cpu.read(tmp_path, [os.getpid()])["chat._accept"][0] == 1
