"""Fault injection for tests: make one stage of a turn raise, to prove that every failure
ends the turn for everyone (see README, "Failure behaviour").

Off unless `settings.AGENTS_FAULT_INJECTION` names a stage; production leaves it empty, and
then `point()` is one global read and a falsy test (it runs for every frame batch of every
stream, and each read of `settings` is a lazy-object lookup). Tests set it per test
in-process (pytest-django's `settings` fixture) or through the environment variable of the
same name for the daphne and Celery processes they start. `"stage"` raises every time the stage is
reached; `"stage:N"` only the first N times in this process (so a live server can fail a few
turns and then serve normally).
"""
from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

# Every stage a turn passes through, in order; each has one `point()` call in the code.
STAGES = (
    "admission",  # runner.admit: the turn row is created
    "lock_acquire",  # a turn's first try for its session's turn lock (in the runner), or the lock just taken at admission
    "agent_load",  # runner: the agent instance is loaded for the turn
    "before_turn",  # model_loop: the agent's before_turn hook
    "model_call",  # gateway/steps.StepStream: before the model request is sent
    "stream_start",  # stream_publisher: marking the turn as streaming (beside the model call)
    "model_stream",  # gateway/steps.StepStream: after the first token reached the turn
    "tool",  # model_loop.run_tool: running a server tool
    "chunk_log",  # chunk_log.write_batch: storing a batch of the resumable stream
    "reply_write",  # runner: persisting the reply
    "broadcast",  # stream_publisher: sending a batch of live frames
    "lock_release",  # runner: releasing the session's turn lock
    "on_chat_response",  # runner: the agent's on_chat_response hook
)


class InjectedFault(RuntimeError):
    """Raised at the armed stage; its message says which one."""


_lock = threading.Lock()
_fired: dict[str, int] = {}
# `settings.AGENTS_FAULT_INJECTION`, read once and again whenever a test changes it.
_armed: str | None = None


def _forget_armed(*, setting: str, **_: Any) -> None:
    global _armed
    if setting == "AGENTS_FAULT_INJECTION":
        _armed = None


setting_changed.connect(_forget_armed)


def point(stage: str) -> None:
    """Raise InjectedFault here when `stage` is armed; otherwise do nothing."""
    global _armed
    armed = _armed
    if armed is None:
        armed = _armed = settings.AGENTS_FAULT_INJECTION
    if not armed:
        return
    name, _, limit = armed.partition(":")
    if name != stage:
        return
    if limit:
        with _lock:
            fired = _fired.get(stage, 0)
            if fired >= int(limit):
                return
            _fired[stage] = fired + 1
    raise InjectedFault(f"Injected fault at {stage}.")


def reset() -> None:
    """Forget how often limited faults fired (between tests in one process)."""
    with _lock:
        _fired.clear()
