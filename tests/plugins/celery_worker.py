"""Real Celery worker (and beat) processes on the test database and broker.

Embedded mode uses the filesystem broker under var/, production mode Redis; either way the
worker is a separate process that runs turns exactly as in deployment.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.live_server import ROOT, child_env

# Short enough for tests to watch an interrupted turn being detected.
FAST_RECOVERY = {"AGENTS_TURN_STALE_SECONDS": "2", "AGENTS_RECOVERY_SWEEP_SECONDS": "1"}


class CeleryProcess:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"celery exited: {self.output()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"celery did not print {text!r} in {timeout}s: {self.output()[-3000:]}")

    def kill_hard(self) -> None:
        """kill -9: no shutdown, no acknowledgement, no cleanup, as when a machine dies."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _purge_broker() -> None:
    """Messages left by earlier runs must not reach this run's workers."""
    from chatproject.celery import app

    app.control.purge()


@pytest.fixture
def celery_processes(model: Any, transactional_db: Any) -> Iterator[Callable[..., CeleryProcess]]:
    """A factory: `start("worker")` or `start("beat")`, with extra environment variables."""
    _purge_broker()
    started: list[CeleryProcess] = []

    def start(kind: str = "worker", **extra_env: str) -> CeleryProcess:
        name = f"{kind}-{uuid.uuid4().hex[:6]}"
        log = ROOT / "test-artifacts" / f"celery-{name}.log"
        log.parent.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "celery", "-A", "chatproject", kind, "--loglevel=INFO"]
        if kind == "worker":
            command += ["--pool=solo", f"--hostname={name}@%h", "--without-gossip", "--without-mingle", "--prefetch-multiplier=1"]
        else:
            command += [f"--schedule={log.with_suffix('.db')}", "--max-interval=1"]
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=child_env(model.base_url, extra_env),
            stdout=open(log, "wb"),  # noqa: SIM115 - owned by the child
            stderr=subprocess.STDOUT,
        )
        celery = CeleryProcess(process, log)
        started.append(celery)
        celery.wait_for_output("ready." if kind == "worker" else "beat: Starting...", timeout=90)  # a loaded machine starts slowly
        return celery

    yield start
    for celery in started:
        celery.stop()
    _purge_broker()
