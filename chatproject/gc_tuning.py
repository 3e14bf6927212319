"""The garbage collector of a serving process, set for many concurrent streams.

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

# Allocations (net of deallocations) between two collections of the youngest generation.
YOUNG_THRESHOLD = 3_000


def tune_for_serving() -> None:
    """Freeze what start-up built and collect the young generation less often. Call once,
    when the app has loaded; objects created later are collected as usual."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
