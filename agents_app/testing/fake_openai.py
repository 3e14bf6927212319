"""A scriptable fake of the OpenAI chat-completions API over real HTTP.

Tests and benchmarks replace the external model with this server so that the `openai` SDK
runs unchanged: streamed SSE chunks (content, reasoning_content, tool_calls by index, a usage
chunk, `[DONE]`), non-streamed completions, HTTP errors, delays and mid-stream failures.

    fake = FakeOpenAI().start()
    fake.script(Reply.text("Hello!"), Reply.tool_calls([ToolCallSpec("getWeather", '{"city":"Paris"}')]))
    ... point OPENAI_BASE_URL at fake.base_url ...
    fake.requests  # the JSON bodies received, in order

Command line (serves until Ctrl-C; without a script every request gets a streamed
"You said: <last user text>"):

    python -m agents_app.testing.fake_openai --port 8700 [--delay 0.02] [--script replies.json]

A script file is a JSON list of replies, each {"text": "...", "delay": 0.01} or
{"tool_calls": [{"name": "...", "arguments": "{...}"}]} or {"error": 500, "message": "..."}.
`Reply.context_length_exceeded()` answers as OpenAI does for a too-long request; setting
`fake.context_window` does so for every request over that many tokens (`prompt_tokens`).
"""
from __future__ import annotations

import argparse
import json
import select
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ToolCallSpec:
    name: str
    arguments: str = "{}"
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:12]}")
    fragments: int = 2


@dataclass
class Reply:
    """One scripted answer. Build with the class methods."""

    pieces: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[ToolCallSpec] = field(default_factory=list)
    finish_reason: str = "stop"
    delay: float = 0.0
    first_token_delay: float = 0.0
    status: int = 200
    error_message: str = ""
    error_type: str = "api_error"
    error_code: str | int | None = None
    retry_after: int | None = None
    break_after: int | None = None  # close the connection after this many content pieces
    usage: dict[str, int] | None = None

    @classmethod
    def text(
        cls,
        text: str,
        *,
        chunks: list[str] | None = None,
        chunk_size: int | None = None,
        delay: float = 0.0,
        first_token_delay: float = 0.0,
        finish_reason: str = "stop",
    ) -> Reply:
        if chunks is None:
            if chunk_size:
                chunks = [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)]
            else:
                chunks = _words(text)
        assert "".join(chunks) == text, "chunks must add up to the text"
        return cls(pieces=chunks, delay=delay, first_token_delay=first_token_delay, finish_reason=finish_reason)

    @classmethod
    def tool_calls(cls, calls: list[ToolCallSpec], *, text: str | None = None, delay: float = 0.0) -> Reply:
        return cls(pieces=_words(text) if text else [], calls=calls, finish_reason="tool_calls", delay=delay)

    @classmethod
    def with_reasoning(cls, reasoning: str, then_text: str, *, delay: float = 0.0) -> Reply:
        return cls(pieces=_words(then_text), reasoning=_words(reasoning), delay=delay)

    @classmethod
    def error(
        cls, status: int = 500, message: str = "upstream error", *, retry_after: int | None = None, code: str | None = None,
        error_type: str = "api_error",
    ) -> Reply:
        return cls(status=status, error_message=message, retry_after=retry_after, error_code=code or status, error_type=error_type)

    @classmethod
    def context_length_exceeded(cls, limit: int = 8192, requested: int = 9000) -> Reply:
        """OpenAI's answer to a request longer than the model's context window."""
        return cls.error(
            400,
            f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
            f"{requested} tokens. Please reduce the length of the messages.",
            code="context_length_exceeded",
            error_type="invalid_request_error",
        )

    @classmethod
    def broken(cls, text: str, *, after: int, delay: float = 0.0) -> Reply:
        """Streams `after` pieces of `text`, then drops the connection without finishing."""
        return cls(pieces=_words(text), break_after=after, delay=delay)

    @classmethod
    def json(cls, value: Any) -> Reply:
        return cls(pieces=[json.dumps(value)])

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Reply:
        if "error" in spec:
            return cls.error(int(spec["error"]), spec.get("message", "upstream error"))
        if "tool_calls" in spec:
            calls = [ToolCallSpec(c["name"], c.get("arguments", "{}")) for c in spec["tool_calls"]]
            return cls.tool_calls(calls, text=spec.get("text"), delay=float(spec.get("delay", 0)))
        return cls.text(spec.get("text", ""), delay=float(spec.get("delay", 0)))


def prompt_tokens(request: dict[str, Any]) -> int:
    """The fake's token count of a request: a quarter of the characters of every message's
    content and tool-call arguments, plus 4 per message (real tokenizers vary; this is the
    yardstick tests hold the server's own estimate against)."""
    total = 0
    for message in request.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(item.get("text", "")) for item in content if isinstance(item, dict))
        chars = len(content or "") + sum(len((c.get("function") or {}).get("arguments") or "") for c in message.get("tool_calls") or [])
        total += 4 + -(-chars // 4)
    return total


def _words(text: str) -> list[str]:
    pieces: list[str] = []
    for word in text.split(" "):
        pieces.append(word if not pieces else " " + word)
    return [p for p in pieces if p] or [text]


def echo_responder(request: dict[str, Any]) -> Reply:
    """The default without a script: repeat the last user message, word by word."""
    text = ""
    for message in reversed(request.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
            break
    return Reply.text(f"You said: {text}" if text else "Hello! (fake model)")


class _ClientGone(Exception):
    pass


class _UpstreamServer(ThreadingHTTPServer):
    """A real upstream accepts bursts of connections: socketserver's default listen backlog
    of 5 drops the SYNs of 50 chats connecting at once, which then fail on a loaded machine.
    And it sends each event as it is written: without TCP_NODELAY an event written while the
    previous one is unacknowledged waits for that ACK, which the client may delay by 40 ms
    (a request on a kept-alive connection waited that long for its answer)."""

    request_queue_size = 1024
    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


class FakeOpenAI:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._disconnected = threading.Condition(self._lock)
        self.default_reply: Reply | None = None
        self.responder: Callable[[dict[str, Any]], Reply] | None = None
        self.default_delay = 0.0
        # With a window set, a request over it (by prompt_tokens) gets context_length_exceeded.
        self.context_window: int | None = None
        self.requests: list[dict[str, Any]] = []
        self.authorized: list[bool] = []
        self.disconnects = 0
        self._server = _UpstreamServer((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def wait_for_disconnect(self, timeout: float = 5.0, count: int = 1) -> bool:
        """True once `count` streamed responses lost their client before finishing."""
        with self._disconnected:
            return self._disconnected.wait_for(lambda: self.disconnects >= count, timeout)

    def _next_reply(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self.context_window is not None and prompt_tokens(request) > self.context_window:
                return Reply.context_length_exceeded(self.context_window, prompt_tokens(request))
            if self._queue:
                return self._queue.popleft()
        if self.responder is not None:
            return self.responder(request)
        if self.default_reply is not None:
            return self.default_reply
        reply = echo_responder(request)
        reply.delay = self.default_delay
        return reply

    def _count_disconnect(self) -> None:
        with self._disconnected:
            self.disconnects += 1
            self._disconnected.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by design
                return

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fake"}]})
                else:
                    self._json(404, {"error": {"message": "not found", "type": "invalid_request_error", "code": None}})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._json(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error", "code": None}})
                    return
                fake.authorized.append(bool(self.headers.get("Authorization")))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": "not found", "type": "invalid_request_error", "code": None}})
                    return
                reply = fake._next_reply(request)
                if reply.status != 200:
                    headers = {"Retry-After": str(reply.retry_after)} if reply.retry_after is not None else {}
                    error = {"message": reply.error_message, "type": reply.error_type, "param": None, "code": reply.error_code or reply.status}
                    self._json(reply.status, {"error": error}, headers)
                    return
                if request.get("stream"):
                    try:
                        self._stream(request, reply)
                    except (_ClientGone, BrokenPipeError, ConnectionResetError):
                        fake._count_disconnect()
                        self.close_connection = True
                    # Otherwise the connection stays open for the client's next request, as a
                    # real upstream keeps it (HTTP/1.1 keep-alive).
                else:
                    self._json(200, _completion(request, reply))

            def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _wait(self, seconds: float) -> None:
                """Sleep, noticing promptly when the client closes the connection."""
                deadline = time.monotonic() + seconds
                while True:
                    remaining = deadline - time.monotonic()
                    readable, _, _ = select.select([self.connection], [], [], max(0.0, min(remaining, 0.02)))
                    if readable:
                        try:
                            if self.connection.recv(1, socket.MSG_PEEK) == b"":
                                raise _ClientGone
                        except (ConnectionResetError, OSError) as error:
                            raise _ClientGone from error
                    if remaining <= 0:
                        return

            def _send_event(self, payload: str) -> None:
                data = f"data: {payload}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _stream(self, request: dict[str, Any], reply: Reply) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                completion_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
                model = request.get("model", "fake-model")

                def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
                    self._send_event(json.dumps({
                        "id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    }))

                chunk({"role": "assistant", "content": ""})
                self._wait(reply.first_token_delay)
                for piece in reply.reasoning:
                    self._wait(reply.delay)
                    chunk({"reasoning_content": piece})
                for index, piece in enumerate(reply.pieces):
                    if reply.break_after is not None and index >= reply.break_after:
                        # Drop the connection mid-body, as a crashed upstream would.
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self._wait(reply.delay)
                    chunk({"content": piece})
                for position, call in enumerate(reply.calls):
                    self._wait(reply.delay)
                    chunk({"tool_calls": [{"index": position, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}]})
                    size = max(1, -(-len(call.arguments) // max(call.fragments, 1)))
                    for start in range(0, len(call.arguments), size):
                        chunk({"tool_calls": [{"index": position, "function": {"arguments": call.arguments[start : start + size]}}]})
                chunk({}, reply.finish_reason)
                if (request.get("stream_options") or {}).get("include_usage"):
                    self._send_event(json.dumps({
                        "id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                        "choices": [], "usage": _usage(request, reply),
                    }))
                self._send_event("[DONE]")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        return Handler


def _usage(request: dict[str, Any], reply: Reply) -> dict[str, int]:
    if reply.usage is not None:
        return reply.usage
    prompt = sum(len(str(m.get("content") or "").split()) for m in request.get("messages", [])) + 1
    completion = len(reply.pieces) + len(reply.reasoning) + len(reply.calls)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.pieces) or None}
    if reply.calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in reply.calls
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake-model"),
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        "usage": _usage(request, reply),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="A scriptable fake OpenAI chat-completions server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between streamed pieces")
    parser.add_argument("--script", help="JSON file with a list of replies, served in order")
    args = parser.parse_args()
    fake = FakeOpenAI(args.host, args.port)
    fake.default_delay = args.delay
    if args.script:
        with open(args.script) as handle:
            fake.script(*(Reply.from_dict(spec) for spec in json.load(handle)))
    print(f"Fake OpenAI API at {fake.base_url}", flush=True)
    fake.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
