"""A serving process (daphne loading chatproject.asgi) keeps what start-up built out of the
garbage collector's reach unless AGENTS_GC_FREEZE=false says otherwise, and records its
collections where AGENTS_GC_STATS says (for `manage.py loadbench`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from chatproject.gc_tuning import YOUNG_THRESHOLD

ROOT = Path(__file__).resolve().parents[1]
_REPORT = (
    "import gc, json; default = gc.get_threshold()[0]; import chatproject.asgi; "
    "print(json.dumps([gc.get_freeze_count(), gc.get_threshold()[0], default]))"
)


def _collector_after_loading_the_app(**env: str) -> tuple[int, int, int]:
    """Frozen objects, the youngest generation's threshold, and that threshold before."""
    completed = subprocess.run(
        [sys.executable, "-c", _REPORT], cwd=ROOT, env={**{k: v for k, v in os.environ.items() if k != "AGENTS_GC_FREEZE"}, **env},
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    frozen, young_threshold, python_default = json.loads(completed.stdout.strip().splitlines()[-1])
    return frozen, young_threshold, python_default


def test_a_loaded_server_freezes_its_startup_objects_and_collects_young_ones_less_often() -> None:
    frozen, young_threshold, _ = _collector_after_loading_the_app()
    assert frozen > 50_000  # Django, the SDK and the agents' modules, not a handful
    assert young_threshold == YOUNG_THRESHOLD


def test_gc_freeze_false_leaves_the_collector_as_python_sets_it() -> None:
    frozen, young_threshold, python_default = _collector_after_loading_the_app(AGENTS_GC_FREEZE="false")
    assert frozen == 0
    assert young_threshold == python_default


def test_a_recorded_process_writes_its_collections_by_generation(tmp_path: Path) -> None:
    script = (
        "import gc, time; from chatproject.gc_tuning import record_collections; "
        f"record_collections({str(tmp_path)!r}, interval=0.05); "
        "[gc.collect() for _ in range(3)]; gc.collect(0); time.sleep(0.3); print(__import__('os').getpid())"
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    recorded = json.loads((tmp_path / f"gc-{completed.stdout.strip()}.json").read_text())
    assert recorded["collections"][2] >= 3 and recorded["collections"][0] >= 1
    assert recorded["cpu_seconds"][2] > 0
    assert 0 < recorded["longest_seconds"][2] <= recorded["cpu_seconds"][2]
