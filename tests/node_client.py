"""Runs the official npm clients (tests/node/scenario.mjs) under the local Node 22."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = NODE_DIR / "node_modules" / ".bin" / "node"


def ensure_node_deps() -> Path:
    """Install the pinned clients (and Node 22) from the lockfile when they are missing."""
    if not NODE.exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True)
    return NODE


def run_scenario(
    scenario: str, *, host: str, agent: str, name: str, token: str | None = None, timeout: float = 60, **options: str
) -> dict[str, Any]:
    command = [str(ensure_node_deps()), "scenario.mjs", scenario, "--host", host, "--agent", agent, "--name", name]
    if token:
        command += ["--token", token]
    command += ["--timeout", str(int(timeout))]
    for key, value in options.items():
        command += [f"--{key}", str(value)]
    completed = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=timeout + 15)
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    result = json.loads(lines[-1]) if lines else {}
    if completed.returncode != 0 or "error" in result and len(result) == 1:
        raise AssertionError(f"scenario {scenario} failed ({completed.returncode}): {result}\n{completed.stderr[-4000:]}")
    return result
