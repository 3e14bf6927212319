"""The garbage collector of a serving process, set for many concurrent streams, and a
record of its collections for `manage.py loadbench` (`AGENTS_GC_STATS`).

Once the app has loaded, a daphne process holds ~215,000 objects that never become garbage
(Django, the models, the openai SDK, the agents' modules), and CPython's full collection
walks every one of them: in a run of 200 chats streaming at once that happened twice, ~185 ms
of CPU each, with every stream stalled meanwhile. Frozen after start-up they are left out of
every collection. A streamed turn allocates many short-lived objects, and the youngest
generation's default threshold (700) ran ~230 young and ~21 middle collections in that run;
at 3,000, ~50 and 4, each pause at most ~24 ms. Collection CPU in that run: ~0.5 s before,
0.10-0.15 s after. (At 10,000 the total was about the same, but one middle collection
paused every stream for 33-59 ms.)
"""
from __future__ import annotations

import gc
import json
import os
import threading
import time
from pathlib import Path

# Allocations (net of deallocations) between two collections of the youngest generation.
YOUNG_THRESHOLD = 3_000


def tune_for_serving() -> None:
    """Freeze what start-up built and collect the young generation less often. Call once,
    when the app has loaded; objects created later are collected as usual."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)


# How often a recorded process rewrites its collection totals.
RECORD_INTERVAL = 0.2


def record_collections(directory: str, interval: float = RECORD_INTERVAL) -> None:
    """Time every collection (the collecting thread's CPU) by generation and keep the totals,
    the longest one included, in `directory`/gc-<pid>.json, rewritten every `interval`
    seconds by a daemon thread: a collection stalls every stream of the process, so a load
    benchmark reports how many there were and how long the worst one held things up."""
    totals: dict[str, list[float]] = {"collections": [0, 0, 0], "cpu_seconds": [0.0] * 3, "longest_seconds": [0.0] * 3}
    started = 0.0

    def on_collection(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.thread_time()
            return
        spent, generation = time.thread_time() - started, info["generation"]
        totals["collections"][generation] += 1
        totals["cpu_seconds"][generation] += spent
        totals["longest_seconds"][generation] = max(totals["longest_seconds"][generation], spent)

    path = Path(directory) / f"gc-{os.getpid()}.json"

    def write_every_interval() -> None:
        while True:
            time.sleep(interval)
            partial = path.with_suffix(".tmp")
            partial.write_text(json.dumps(totals))
            partial.replace(path)  # a reader never sees half a file

    gc.callbacks.append(on_collection)
    threading.Thread(target=write_every_interval, name="gc-record", daemon=True).start()
