"""What the server processes of a `manage.py loadbench` run have spent so far: CPU and RSS
from /proc (Linux), garbage collections from the records they write (`AGENTS_GC_STATS`).
Each reading sums over the run's processes (one daphne, or several with `--servers`)."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


def rss_kib(pids: list[int]) -> dict[str, int]:
    """Current and peak resident set size of processes, summed."""
    sizes = {"VmRSS": 0, "VmHWM": 0}
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in sizes:
                    sizes[name] += int(value.split()[0])
    return sizes


def _cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / ticks, int(fields[12]) / ticks
    return float("nan"), float("nan")


def cpu_and_system_seconds(pids: list[int]) -> tuple[float, float]:
    """CPU time (user + system) the processes have used so far, the server's cost of a run
    whatever else loads the machine meanwhile, and its kernel part (socket reads and writes,
    polling, thread hand-offs: time a profile of the GIL holder, `--profile-gil`, does not
    see), from one reading of each process."""
    times = [_cpu_times(pid) for pid in pids]
    return sum(user + system for user, system in times), sum(system for _, system in times)


def cpu_seconds(pids: list[int]) -> float:
    """The first of `cpu_and_system_seconds`."""
    return cpu_and_system_seconds(pids)[0]


def collections(work: Path, pids: list[int]) -> dict[str, list[float]]:
    """The servers' garbage-collection totals so far (`AGENTS_GC_STATS`), summed by generation;
    the longest collection is the longest of any server. A server writes them every 0.2 s."""
    totals: dict[str, list[float]] = {"collections": [0, 0, 0], "cpu_seconds": [0.0] * 3, "longest_seconds": [0.0] * 3}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            recorded = json.loads((work / f"gc-{pid}.json").read_text())
            for generation in range(3):
                totals["collections"][generation] += recorded["collections"][generation]
                totals["cpu_seconds"][generation] += recorded["cpu_seconds"][generation]
                totals["longest_seconds"][generation] = max(totals["longest_seconds"][generation], recorded["longest_seconds"][generation])
    return totals


def collections_since(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, list[float]]:
    """The collections between two records; the longest is the longest since start-up (the
    warm-up turn's collections are few and short)."""
    return {
        "collections": [a - b for a, b in zip(after["collections"], before["collections"])],
        "cpu_seconds": [a - b for a, b in zip(after["cpu_seconds"], before["cpu_seconds"])],
        "longest_seconds": after["longest_seconds"],
    }
