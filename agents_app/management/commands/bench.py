"""`manage.py bench`: figures for the hot paths, printed, never asserted.

* streaming: one turn of N tokens from the fake upstream at full speed through the real
  runner: wall time, tokens/s, channel-layer messages and database rows it cost;
* active path: loading the conversation of a session with M messages;
* replay: reading a finished stream's chunk log back for a resume.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection, transaction

from agents_app.turns import runner
from agents_app.turns.instances import resolve_session
from agents_app.turns.types import TurnRequest
from agents_app.storage import chunk_log, transcript
from agents_app.storage.models import Message, Session, Turn, TurnChunk
from agents_app.testing.fake_openai import FakeOpenAI, Reply


class Command(BaseCommand):
    help = "Measure streaming, path loading and replay; prints figures."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--tokens", type=int, default=2000)
        parser.add_argument("--messages", type=int, default=5000)

    def handle(self, *args: Any, **options: Any) -> None:
        owner, _ = get_user_model().objects.get_or_create(username="bench-user")
        try:
            self._streaming(owner, options["tokens"])
            self._path(owner, options["messages"])
        finally:
            Session.objects.filter(owner=owner).delete()
            owner.delete()

    def _streaming(self, owner: Any, tokens: int) -> None:
        fake = FakeOpenAI().start()
        settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY, settings.OPENAI_MODEL = fake.base_url, "bench", "fake-model"
        fake.script(Reply.text("".join(f" t{i}" for i in range(tokens)).strip()))
        session = resolve_session("minimal-chat-agent", "bench-stream", owner)
        layer = get_channel_layer()
        sent = {"group_send": 0}
        original = layer.group_send

        async def counting_group_send(group: str, message: dict[str, Any]) -> None:
            sent["group_send"] += 1
            await original(group, message)

        layer.group_send = counting_group_send
        request = TurnRequest(session_id=session.pk, request_id="bench0001", source=Turn.Source.PROGRAMMATIC,
                              new_messages=[{"id": "bench-u", "role": "user", "parts": [{"type": "text", "text": "go"}]}])
        turn, _ = runner.admit(request)

        async def run_turn() -> None:
            await (await runner.start_turn(request, admitted=turn)).result()

        started = time.perf_counter()
        asyncio.run(run_turn())
        elapsed = time.perf_counter() - started
        layer.group_send = original
        fake.stop()
        turn.refresh_from_db()
        rows = TurnChunk.objects.filter(turn=turn).count()
        started = time.perf_counter()
        replayed = chunk_log.read_bodies(turn.pk)
        replay_ms = (time.perf_counter() - started) * 1000
        self.stdout.write(f"streaming: {tokens} tokens in {elapsed:.2f} s ({tokens / elapsed:,.0f} tokens/s end to end)")
        self.stdout.write(f"  stored chunks: {turn.chunk_count} (consecutive deltas merged), chunk-log rows written: {rows}")
        self.stdout.write(f"  channel-layer messages: {sent['group_send']} for {tokens} tokens")
        self.stdout.write(f"replay: {len(replayed)} chunks read back in {replay_ms:.1f} ms")

    def _path(self, owner: Any, count: int) -> None:
        session = resolve_session("minimal-chat-agent", "bench-path", owner)
        parent = None
        with transaction.atomic():
            for index in range(count):
                parent = Message.objects.create(
                    session=session, uid=f"m{index}", parent=parent,
                    role="user" if index % 2 == 0 else "assistant", parts=[{"type": "text", "text": f"message {index}"}],
                )
        Session.objects.filter(pk=session.pk).update(active_leaf=parent)
        timings = []
        for _ in range(7):
            started = time.perf_counter()
            path = transcript.transcript(session)
            timings.append((time.perf_counter() - started) * 1000)
        assert len(path) == count
        self.stdout.write(f"active path: {count} messages loaded in {statistics.median(timings):.1f} ms (median of 7, {connection.vendor})")
