"""Private PostgreSQL and Redis instances that a test may stop and start at will.

The machine's shared services are never restarted (other people use them): each fixture
starts its own server on a free port with its data in a temporary directory, and removes it
afterwards. PostgreSQL runs as the `postgres` system user when the tests run as root
(initdb refuses root).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.live_server import free_port


def _wait_for_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


class ThrowawayPostgres:
    def __init__(self, root: Path) -> None:
        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(path.split("/")[-2]))
        if not versions:
            pytest.skip("PostgreSQL server binaries are not installed")
        self.bin = Path(versions[-1])
        self.port = free_port()
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as_postgres, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        _wait_for_port(self.port)

    def stop(self) -> None:
        """A fast shutdown, as a restart by an operator or a package upgrade does: every
        connection is terminated."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


class ThrowawayRedis:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.dir = root
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Saved on shutdown and loaded on start, like a packaged Redis restarted by its service manager.
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "60 1", "--appendonly", "no"],
            stdout=open(self.dir / "redis.log", "ab"),  # noqa: SIM115 - owned by the child
            stderr=subprocess.STDOUT,
        )
        _wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis saves its dataset and exits
            self.process.wait(timeout=30)


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    # Directly under /tmp: pytest's own temporary directories are private to root.
    root = Path(tempfile.mkdtemp(prefix="throwaway-pg-"))
    server = ThrowawayPostgres(root)
    server.start()
    yield server
    try:
        server.stop()
    except subprocess.CalledProcessError:
        pass  # already stopped by the test
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    root = Path(tempfile.mkdtemp(prefix="throwaway-redis-"))
    server = ThrowawayRedis(root)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
