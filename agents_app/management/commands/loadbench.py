"""`manage.py loadbench`: many simultaneous chats over real sockets; figures printed, never asserted.

It starts the fake OpenAI upstream (agents_app/testing/fake_openai.py) and one `daphne`
process serving this project, as separate processes so that neither the upstream nor the
load clients share the server's CPU time slice, then opens K WebSocket clients speaking
cf_agent_chat to the `chat-agent` (or `--agent`), each in its own conversation. Once all
are connected they all send one message at the same moment; the fake upstream answers each
with N tokens, one every `--delay` seconds (paced) or as fast as it can (`--fast`).

Printed: TTFT (send → first text delta at the client) p50/p99 beside the upstream's own (the
median of a few requests made straight to it with the openai SDK), tokens/s delivered in
aggregate against what the upstream produced, the p99 gap between stream frames at a
client from its first text delta on (the frames that open the message come before the model
has answered: the wait after them is the TTFT), the database round trips per turn before
and after its first token (counted by the server, `AGENTS_COUNT_QUERIES`), the server's CPU
time, its garbage collections (recorded by the server, `AGENTS_GC_STATS`) and RSS, the CPU
of its database threads' calls by function (`AGENTS_DB_CPU`), and whether every answer
arrived complete, exactly once. With `--history N` each conversation
first gets N earlier messages (a turn of its own before the run), so the run's turns are
those of long chats. The K sockets connect at once before that (a reconnect storm after a
deploy looks like this): how long each waited for its connect frames, and the CPU it cost.

The database and channel layer are the server's usual ones: embedded (a fresh SQLite file,
in-memory layer) unless DATABASE_URL / REDIS_URL are set. Presets match issue 12's table:

    manage.py loadbench --preset 1x100      # 1 chat, 100 tokens paced
    manage.py loadbench --preset 50x100     # 50 chats x 100 tokens paced
    manage.py loadbench --preset 200x50     # 200 chats x 50 tokens paced
    manage.py loadbench --preset fast1000   # 1 chat x 1,000 tokens, upstream at full speed
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agents_app.testing import db_cpu, process_readings, timeline

PRESETS: dict[str, dict[str, Any]] = {
    "1x100": {"chats": 1, "tokens": 100, "delay": 0.02},
    "50x100": {"chats": 50, "tokens": 100, "delay": 0.02},
    "200x50": {"chats": 200, "tokens": 50, "delay": 0.02},
    "fast1000": {"chats": 1, "tokens": 1000, "delay": 0.0},
}
# The fake's echo answer is "You said: <text>": two words of its own, then the user's words.
ECHO_PREFIX_WORDS = 2


@dataclass
class ChatRun:
    """What one client saw of its turn."""

    request_id: str = ""
    sent_at: float = 0.0
    first_token_at: float | None = None
    last_token_at: float | None = None
    done_at: float | None = None
    frame_times: list[float] = field(default_factory=list)
    text: str = ""
    error: str | None = None


@dataclass
class FirstTokens:
    """The servers' CPU from the first send to the moment every chat has its first token:
    whether a burst's TTFT is CPU the server spent (near 100 % of a core) or time it waited."""

    pids: list[int]
    waiting: int
    cpu_at_start: float
    cpu: float | None = None
    at: float | None = None

    def arrived(self, now: float) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.cpu, self.at = process_readings.cpu_seconds(self.pids) - self.cpu_at_start, now


def _words(tokens: int) -> str:
    """A user message the fake echoes back as an answer of `tokens` words."""
    return " ".join(f"w{index}" for index in range(tokens - ECHO_PREFIX_WORDS))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CommandError(f"{process.args[0]} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise CommandError(f"nothing listens on port {port} after {timeout:.0f} s")


# The database threads' busiest functions printed (by their CPU in all).
DATABASE_CPU_SHOWN = 6
# How long to wait for the servers' garbage-collection records to catch up: two rewrites
# (chatproject/gc_tuning.py RECORD_INTERVAL; the app does not import the project) and a margin.
GC_RECORD_WAIT = 0.45


def _turn_counts(path: Path, turns: int, prefix: str = "", timeout: float = 10.0) -> list[dict[str, Any]]:
    """The server's per-turn query counts of the turns whose request id starts with `prefix`
    (not those that gave conversations their history); a turn writes its line after its done frame."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        counts = [count for line in lines if line.strip() and (count := json.loads(line))["request_id"].startswith(prefix)]
        if len(counts) >= turns or time.monotonic() >= deadline:
            return counts
        time.sleep(0.05)


async def _upstream_ttft(base_url: str, samples: int = 5) -> float:
    """The upstream's own TTFT in ms: request → first content delta, straight from the openai
    SDK with one client (as the server keeps one), the median of `samples` after a warm-up.
    A short question: the fake echoes it, and its answer's pace is the run's."""
    import openai

    times = []
    async with openai.AsyncOpenAI(base_url=base_url, api_key="loadbench") as client:
        for attempt in range(samples + 1):
            started = time.perf_counter()
            stream = await client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "w0 w1 w2"}], stream=True
            )
            first: float | None = None
            async for chunk in stream:  # read to the end: the connection is kept for the next one
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter()
            if attempt and first is not None:  # the first request opened the connection
                times.append((first - started) * 1000)
    return statistics.median(times)


@dataclass
class UpstreamAlone:
    """The upstream's own figures at the run's concurrency: K streams straight to it."""

    ttft_ms: list[float]
    tokens_per_second: float


async def _upstream_alone(base_url: str, chats: int, words: str, tokens: int) -> UpstreamAlone:
    """K requests sent to the upstream at once, each on its own connection, read by a bare
    HTTP/1.1 client (a few µs per event, so this process is not what limits the figure):
    the TTFTs and the tokens/s the upstream itself delivers at this concurrency, which is
    what the server can at best pass on. A paced fake runs one thread per stream, and at a
    few hundred streams it falls behind its configured pace."""
    host, port = base_url.split("//", 1)[1].split("/", 1)[0].split(":")
    body = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": words}], "stream": True}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    connections = await asyncio.gather(*(asyncio.open_connection(host, int(port)) for _ in range(chats)))
    sent_at = time.perf_counter()

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[float | None, float]:
        writer.write(head + body)
        first: float | None = None
        while line := await reader.readline():
            if first is None and line.startswith(b"data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
            if line.startswith(b"data: [DONE]"):
                break
        writer.close()
        return first, time.perf_counter()

    results = await asyncio.gather(*(one(reader, writer) for reader, writer in connections))
    ttfts = [(first - sent_at) * 1000 for first, _ in results if first is not None]
    wall = max(done for _, done in results) - sent_at
    return UpstreamAlone(ttfts, chats * tokens / wall)


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Command(BaseCommand):
    help = "Open K simultaneous cf_agent_chat sessions against a daphne process and a paced fake upstream; print figures."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--preset", choices=sorted(PRESETS), help="a row of issue 12's table")
        parser.add_argument("--chats", type=int, default=1, help="simultaneous chats (K)")
        parser.add_argument("--tokens", type=int, default=100, help="tokens per answer (N)")
        parser.add_argument("--delay", type=float, default=0.02, help="seconds between upstream tokens")
        parser.add_argument("--fast", action="store_true", help="upstream streams as fast as it can")
        parser.add_argument(
            "--history", type=int, default=0,
            help="about this many earlier messages each conversation already holds (stored by a first turn before the run): a long chat's per-turn costs",
        )
        parser.add_argument("--idle", type=int, default=0, help="extra connected sockets that send nothing")
        parser.add_argument("--agent", default="chat-agent")
        parser.add_argument("--profile", metavar="FILE", help="py-spy record the server during the run into FILE")
        parser.add_argument(
            "--profile-gil",
            action="store_true",
            help="with --profile: sample only the thread holding the GIL, so the profile shows where CPU goes rather than where threads wait",
        )
        parser.add_argument("--timeout", type=float, default=300.0)
        parser.add_argument(
            "--servers", type=int, default=1,
            help="daphne processes sharing the load (chats spread round-robin); more than one needs REDIS_URL",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["preset"]:
            options.update(PRESETS[options["preset"]])
        if options["fast"]:
            options["delay"] = 0.0
        if options["servers"] > 1 and not os.environ.get("REDIS_URL"):
            raise CommandError("Several daphne processes share sessions through channels-redis: set REDIS_URL (and DATABASE_URL).")
        chats, tokens, delay = options["chats"], options["tokens"], options["delay"]
        if tokens <= ECHO_PREFIX_WORDS:
            raise CommandError(f"--tokens must be more than {ECHO_PREFIX_WORDS}")
        with tempfile.TemporaryDirectory(prefix="loadbench-") as workdir, contextlib.ExitStack() as stack:
            work = Path(workdir)
            upstream_port = _free_port()
            env = self._server_env(work, upstream_port)
            upstream = self._spawn(
                stack, [sys.executable, "-m", "agents_app.testing.fake_openai", "--port", str(upstream_port), "--delay", str(delay)], env, work / "upstream.log"
            )
            _wait_for_port(upstream_port, upstream)
            subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, check=True, cwd=settings.BASE_DIR)
            servers = []
            for index in range(options["servers"]):
                port = _free_port()
                process = self._spawn(
                    stack,
                    [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatproject.asgi:application"],
                    env,
                    work / f"daphne-{index}.log",
                )
                _wait_for_port(port, process)
                servers.append((f"ws://127.0.0.1:{port}/agents/{options['agent']}", process.pid))
            queries = work / "queries.jsonl"
            try:
                # One turn per server first, so that imports and first connections are not measured.
                for server in servers:
                    asyncio.run(self._load([server], 1, 5, 0, None, options["timeout"]))
                _turn_counts(queries, len(servers))
                queries.unlink()
                upstream_ttft = asyncio.run(_upstream_ttft(env["OPENAI_BASE_URL"]))
                upstream_alone = asyncio.run(_upstream_alone(env["OPENAI_BASE_URL"], chats, _words(tokens), tokens)) if chats > 1 else None
                figures = asyncio.run(
                    self._load(
                        servers, chats, tokens, options["idle"], options["profile"], options["timeout"], options["profile_gil"], options["history"],
                        server_records=work,
                    )
                )
            except Exception:
                self.stderr.write((work / "daphne-0.log").read_text()[-4000:])
                raise
            figures["upstream_ttft"] = upstream_ttft
            figures["upstream_alone"] = upstream_alone
            figures["timeline"] = timeline.read(str(work / "timeline.txt")) if (work / "timeline.txt").exists() else {}
            self._report(figures, _turn_counts(queries, chats, prefix="r"), chats, tokens, delay, env, len(servers))

    # -- processes ---------------------------------------------------------------------
    def _server_env(self, work: Path, upstream_port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DEBUG": "false",
                "SECRET_KEY": env.get("SECRET_KEY") or uuid.uuid4().hex * 2,
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "AGENTS_DATA_DIR": str(work),
                "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
                "OPENAI_API_KEY": "loadbench",
                "OPENAI_MODEL": "fake-model",
                # Anonymous sessions have no owner, so the per-user limits (new chats per
                # minute, turns at once) do not refuse one client opening hundreds of chats.
                "AGENTS_ALLOW_ANONYMOUS": "true",
                "AGENTS_COUNT_QUERIES": str(work / "queries.jsonl"),
                "AGENTS_GC_STATS": str(work),
                "AGENTS_DB_CPU": str(work),
                "AGENTS_TURN_TIMELINE": str(work / "timeline.txt"),
                # A title by model is one more model call after a chat's first answer. The fake
                # upstream echoes the whole exchange back as that "title" (hundreds of tokens, as
                # much as the answer itself, where a model writes six words), so it would double
                # the measured load: titles are made from the first words instead.
                "AGENTS_CHAT_TITLES": "words",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if "DATABASE_URL" not in env:
            env["SQLITE_PATH"] = str(work / "bench.sqlite3")
        return env

    @staticmethod
    def _spawn(stack: contextlib.ExitStack, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        handle = stack.enter_context(open(log, "wb"))
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR)

        def stop() -> None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

        stack.callback(stop)
        return process

    # -- clients ---------------------------------------------------------------------------
    async def _load(
        self,
        servers: list[tuple[str, int]],
        chats: int,
        tokens: int,
        idle: int,
        profile: str | None,
        timeout: float,
        profile_gil: bool = False,
        history: int = 0,
        server_records: Path | None = None,
    ) -> dict[str, Any]:
        """Chat `index` talks to server `index % len(servers)`; CPU and RSS are the servers' sums.
        `server_records`: where the servers keep their garbage collections and their database
        threads' CPU (AGENTS_GC_STATS, AGENTS_DB_CPU)."""
        run_id = uuid.uuid4().hex[:8]
        pids = [pid for _, pid in servers]
        rss_before = process_readings.rss_kib(pids)
        idle_sockets = [await self._connect(f"{servers[index % len(servers)][0]}/idle-{run_id}-{index}") for index in range(idle)]
        rss_idle = process_readings.rss_kib(pids)
        connect_cpu = process_readings.cpu_seconds(pids)
        timed = await asyncio.gather(
            *(self._timed_connect(f"{servers[index % len(servers)][0]}/bench-{run_id}-{index}") for index in range(chats))
        )
        connect_cpu = process_readings.cpu_seconds(pids) - connect_cpu
        sockets = [ws for ws, _ in timed]
        if history:
            await asyncio.wait_for(asyncio.gather(*(self._prime(ws, f"h{run_id}{index}", history) for index, ws in enumerate(sockets))), timeout)
        words = _words(tokens)
        runs = [ChatRun() for _ in range(chats)]
        collections_before = None
        database_cpu_before: dict[str, list[float]] = {}
        if server_records is not None:
            await asyncio.sleep(GC_RECORD_WAIT)  # the servers' records now include the connecting
            collections_before = process_readings.collections(server_records, pids)
            database_cpu_before = db_cpu.read(server_records, pids)
        profiler = None
        if profile:
            profiler = subprocess.Popen(
                [shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}") or "py-spy", "record", "-p", str(pids[0]), "-r", "200", "--format", "raw", "-o", profile, *(["--gil"] if profile_gil else ["--nonblocking"])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        started = time.perf_counter()
        cpu_before, system_before = process_readings.cpu_and_system_seconds(pids)
        first_tokens = FirstTokens(pids, chats, cpu_before)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(self._chat(ws, run, f"r{run_id}{index}", words, first_tokens) for index, (ws, run) in enumerate(zip(sockets, runs)))),
                timeout,
            )
        finally:
            if profiler is not None:
                profiler.send_signal(2)  # SIGINT: py-spy writes what it sampled
                profiler.wait(30)
        elapsed = time.perf_counter() - started
        cpu_after, system_after = process_readings.cpu_and_system_seconds(pids)
        cpu, system = cpu_after - cpu_before, system_after - system_before
        collections = None
        database_cpu: dict[str, list[float]] = {}
        if server_records is not None and collections_before is not None:  # both or neither
            await asyncio.sleep(GC_RECORD_WAIT)
            collections = process_readings.collections_since(collections_before, process_readings.collections(server_records, pids))
            database_cpu = db_cpu.since(database_cpu_before, db_cpu.read(server_records, pids))
        rss_after = process_readings.rss_kib(pids)
        for ws in [*sockets, *idle_sockets]:
            await ws.close()
        return {
            "runs": runs, "elapsed": elapsed, "cpu": cpu, "system_cpu": system, "expected": f"You said: {words}",
            "rss_before": rss_before, "rss_idle": rss_idle, "rss_after": rss_after, "idle": idle,
            "connect_ms": [ms for _, ms in timed], "connect_cpu": connect_cpu, "collections": collections,
            "database_cpu": database_cpu,
            "first_tokens": first_tokens,
        }

    @classmethod
    async def _timed_connect(cls, url: str) -> tuple[Any, float]:
        started = time.perf_counter()
        ws = await cls._connect(url)
        return ws, (time.perf_counter() - started) * 1000

    @staticmethod
    async def _connect(url: str) -> Any:
        ws = await websockets.connect(url, max_size=None, open_timeout=60, ping_interval=None)
        while json.loads(await ws.recv()).get("type") != "cf_agent_mcp_servers":
            pass  # the connect frames: transcript, identity, MCP state
        return ws

    @staticmethod
    async def _prime(ws: Any, request_id: str, history: int) -> None:
        """Give the conversation `history` earlier messages (user and assistant in turn, ten
        words each, the last a question the upstream answers) and wait for that answer. Short
        messages: the demo agent compacts a conversation past 8,000 tokens, and the fake
        upstream would answer the summary request by echoing it back, a token every delay."""
        messages = [
            {"id": f"{request_id}-{index}", "role": "user" if index % 2 == 0 else "assistant",
             "parts": [{"type": "text", "text": " ".join(f"earlier{index}-{word}" for word in range(10))}]}
            for index in range(history - 1 if history % 2 == 0 else history)
        ]
        body = {"messages": messages, "trigger": "submit-message"}
        await ws.send(json.dumps({"type": "cf_agent_use_chat_request", "id": request_id, "init": {"method": "POST", "body": json.dumps(body)}}))
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "cf_agent_use_chat_response" and frame.get("id") == request_id and frame.get("done"):
                return

    @staticmethod
    async def _chat(ws: Any, run: ChatRun, request_id: str, words: str, first_tokens: FirstTokens | None = None) -> None:
        body = {"messages": [{"id": f"u-{request_id}", "role": "user", "parts": [{"type": "text", "text": words}]}], "trigger": "submit-message"}
        run.request_id = request_id
        run.sent_at = time.perf_counter()
        await ws.send(json.dumps({"type": "cf_agent_use_chat_request", "id": request_id, "init": {"method": "POST", "body": json.dumps(body)}}))
        while True:
            frame = json.loads(await ws.recv())
            now = time.perf_counter()
            if frame.get("type") != "cf_agent_use_chat_response" or frame.get("id") != request_id:
                continue
            if frame.get("error"):
                run.error = frame.get("body") or "error"
            if frame.get("body"):
                chunk = json.loads(frame["body"]) if not frame.get("error") else {}
                if chunk.get("type") == "text-delta":
                    if run.first_token_at is None:
                        run.first_token_at = now
                        if first_tokens is not None:
                            first_tokens.arrived(now)
                    run.last_token_at = now
                    run.text += chunk["delta"]
                if run.first_token_at is not None:  # the wait before it is the TTFT, not a gap
                    run.frame_times.append(now)
            if frame.get("done"):
                run.done_at = now
                return

    # -- figures ---------------------------------------------------------------------------
    def _report(
        self, figures: dict[str, Any], counts: list[dict[str, Any]], chats: int, tokens: int, delay: float, env: dict[str, str], servers: int
    ) -> None:
        runs: list[ChatRun] = figures["runs"]
        ttfts = [(r.first_token_at - r.sent_at) * 1000 for r in runs if r.first_token_at is not None]
        gaps = [(b - a) * 1000 for r in runs for a, b in zip(r.frame_times, r.frame_times[1:])]
        complete = sum(1 for r in runs if r.text == figures["expected"] and r.error is None)
        finished = [r.done_at for r in runs if r.done_at is not None]
        first_sent = min(r.sent_at for r in runs)
        wall = (max(finished) - first_sent) if finished else float("nan")
        delivered = chats * tokens / wall if finished else 0.0
        # The upstream's own pace: every chat's tokens in N × delay after its request.
        upstream = chats * tokens / (tokens * delay) if delay > 0 else float("nan")
        database = "PostgreSQL" if "postgres" in env.get("DATABASE_URL", "") else "SQLite"
        layer = "channels-redis" if env.get("REDIS_URL") else "in-memory layer"
        pace = f"paced, {delay * 1000:.0f} ms/token" if delay > 0 else "fast upstream"
        write = self.stdout.write
        processes = "one daphne" if servers == 1 else f"{servers} daphne processes"
        write(f"loadbench: {chats} chat(s) x {tokens} tokens, {pace}; {processes}, {database}, {layer}")
        write(f"  complete answers:      {complete}/{chats} (text exactly as sent by the upstream, once)")
        write(f"  TTFT:                  p50 {statistics.median(ttfts):.0f} ms, p99 {_percentile(ttfts, 0.99):.0f} ms (upstream alone: {figures['upstream_ttft']:.0f} ms)")
        alone: UpstreamAlone | None = figures["upstream_alone"]
        if alone is not None:
            write(f"  upstream alone ({chats}):   TTFT p50 {statistics.median(alone.ttft_ms):.0f} ms, p99 {_percentile(alone.ttft_ms, 0.99):.0f} ms; "
                  f"{alone.tokens_per_second:,.0f} tokens/s (K streams straight to it, no server)")
        if delay > 0:
            of_alone = f"; {100 * delivered / alone.tokens_per_second:.0f} % of the upstream alone" if alone is not None else ""
            write(f"  tokens/s delivered:    {delivered:,.0f} of {upstream:,.0f} at the upstream's pace ({100 * delivered / upstream:.0f} %{of_alone})")
        else:
            write(f"  tokens/s delivered:    {delivered:,.0f} (all chats, send to done)")
        write(f"  inter-chunk gap:       p50 {_percentile(gaps, 0.5):.1f} ms, p99 {_percentile(gaps, 0.99):.1f} ms")
        burst: FirstTokens = figures["first_tokens"]
        # /proc counts CPU in clock ticks (10 ms): too coarse for a handful of turns.
        if chats >= 10 and burst.cpu is not None and burst.at is not None:
            until = (burst.at - first_sent) * 1000
            write(f"  to the first tokens:   server CPU {1000 * burst.cpu:.0f} ms in the {until:.0f} ms from the first send to the last first token "
                  f"({100 * burst.cpu * 1000 / until:.0f} % of a core), {1000 * burst.cpu / chats:.1f} ms per turn")
        marks: dict[str, dict[str, float]] = figures["timeline"]
        steps = []
        for step in timeline.STEPS:
            after_send = [(marks[r.request_id][step] - r.sent_at) * 1000 for r in runs if step in marks.get(r.request_id, {})]
            if after_send:
                steps.append(f"{step.replace('_', ' ')} {_percentile(after_send, 0.5):.0f} / {_percentile(after_send, 0.99):.0f}")
        if steps:
            write(f"  on the way (ms after send, p50 / p99): {', '.join(steps)}")
        endings = [(r.done_at - r.last_token_at) * 1000 for r in runs if r.done_at is not None and r.last_token_at is not None]
        write(f"  last words to done:    p50 {_percentile(endings, 0.5):.0f} ms, p99 {_percentile(endings, 0.99):.0f} ms (the answer stored, the turn's outcome sent)")
        if counts:
            before = [c["before_first_token"] for c in counts]
            after = [c["after_first_token"] for c in counts]
            calls = [c["calls_before_first_token"] for c in counts]
            calls_after = [c["calls_after_first_token"] for c in counts]
            write(f"  DB round trips/turn:   {statistics.median(before):.0f} before the first token (max {max(before)}), "
                  f"{statistics.median(after):.0f} after it ({len(counts)} turns); "
                  f"{statistics.median(calls):.0f} database-thread calls before the first token, {statistics.median(calls_after):.0f} after it")
        connects = figures["connect_ms"]
        write(f"  connecting (at once):  p50 {statistics.median(connects):.0f} ms, p99 {_percentile(connects, 0.99):.0f} ms to the connect frames, "
              f"server CPU {1000 * figures['connect_cpu'] / chats:.1f} ms per connection")
        write(f"  server CPU:            {figures['cpu']:.2f} s ({figures['system_cpu']:.2f} s of it in the kernel), "
              f"{1000 * figures['cpu'] / chats:.1f} ms per turn, {1e6 * figures['cpu'] / (chats * tokens):.0f} µs per token")
        collections = figures.get("collections")
        if collections:
            young, middle, full = collections["collections"]
            write(f"  garbage collector:     {young:.0f} young, {middle:.0f} middle, {full:.0f} full collections, "
                  f"{1000 * sum(collections['cpu_seconds']):.0f} ms CPU, longest {1000 * max(collections['longest_seconds']):.0f} ms")
        database_cpu = sorted(figures.get("database_cpu", {}).items(), key=lambda item: -item[1][1])
        if database_cpu:
            busiest = ", ".join(f"{name} {1e6 * seconds / calls:.0f} µs × {calls:.0f}" for name, (calls, seconds) in database_cpu[:DATABASE_CPU_SHOWN])
            write(f"  database threads:      {1000 * sum(seconds for _, (_, seconds) in database_cpu):.0f} ms CPU; per call: {busiest}")
        rss = figures["rss_after"]
        write(f"  server RSS:            {figures['rss_before'].get('VmRSS', 0) / 1024:.0f} MiB at start, "
              f"{rss.get('VmRSS', 0) / 1024:.0f} MiB after, peak {rss.get('VmHWM', 0) / 1024:.0f} MiB")
        if figures["idle"]:
            per_socket = (figures["rss_idle"].get("VmRSS", 0) - figures["rss_before"].get("VmRSS", 0)) / figures["idle"]
            write(f"  idle sockets:          {figures['idle']}, ~{per_socket:.0f} KiB RSS each")
