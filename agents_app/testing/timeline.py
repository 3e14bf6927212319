"""Where a turn's wait for its first token goes, on demand (`AGENTS_TURN_TIMELINE`).

With the setting naming a file, each turn appends one line per step it passes on the way to
its first frame, `<request id> <step> <time.perf_counter()>`, so that a load run can say
which step a burst of turns waits for. On Linux `perf_counter` reads the monotonic clock,
the same in every process of the machine, so a client sets the times against its own
send. Off (the default) a mark is one attribute read and a falsy test.
"""
from __future__ import annotations

import threading
import time
from typing import TextIO

from django.conf import settings

# The steps, in the order a turn passes them.
STEPS = (
    "received",  # the chat request frame reached the server's consumer
    "admitted",  # its admission committed (messages stored, turn recorded) and the loop has it
    "model_request",  # the model request is about to be sent to the upstream
    "upstream_output",  # the upstream's first output (text, reasoning or a tool call) arrived
    "first_frame",  # the frame carrying that output went to the session's sockets
)

_lock = threading.Lock()
_files: dict[str, TextIO] = {}


def mark(request_id: str, step: str) -> None:
    path = settings.AGENTS_TURN_TIMELINE
    if not path:
        return
    line = f"{request_id} {step} {time.perf_counter():.6f}\n"
    with _lock:
        handle = _files.get(path)
        if handle is None:
            handle = _files[path] = open(path, "a", buffering=1)  # noqa: SIM115 - kept for the process
        handle.write(line)


def read(path: str) -> dict[str, dict[str, float]]:
    """The marks in `path`, by request id and step (a step seen twice keeps its first time)."""
    marks: dict[str, dict[str, float]] = {}
    with open(path) as handle:
        for line in handle:
            request_id, step, at = line.split()
            marks.setdefault(request_id, {}).setdefault(step, float(at))
    return marks
