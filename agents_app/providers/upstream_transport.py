"""An HTTP/1.1 transport for the `openai` SDK's httpx client, built for many long streams.

A streamed model answer is hundreds of small server-sent events per request, each arriving
in its own network read. Through httpx's default transport (httpcore, h11 and anyio, with
a cancel scope per read) a paced event cost ~120 µs of the event loop, SDK included, with
200 concurrent streams; reading the upstream was a third of the server's busy time. This
transport reads with asyncio streams and decodes the chunked body itself: ~83 µs per event
through the SDK, which keeps the rest (its event-stream parser, request building).

The SDK runs unchanged on top (request building, retries, status errors, the event-stream
parser): this only moves bytes, with what httpx's own transport promises it, namely
keep-alive connections reused per host, TLS with the library's default context, and the
request's connect/read/write timeouts raised as httpx's exceptions (a read timeout is
watched by one timer per connection rather than one per read). Content decoding (gzip)
stays with httpx's Response. Proxies: a client that would route through a proxy
(HTTP(S)_PROXY) keeps httpx's own transport (see `clients.py`).
"""
from __future__ import annotations

import asyncio
import importlib
import ssl
import time
from collections.abc import AsyncIterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import openai

if TYPE_CHECKING:
    import httpx2


def _sdk_http_library() -> ModuleType:
    """The httpx flavour the installed SDK is built on (`httpx`, or `httpx2` from openai 3)."""
    for cls in openai.DefaultAsyncHttpxClient.__mro__:
        root = cls.__module__.split(".")[0]
        if cls.__name__ == "AsyncClient" and root.startswith("httpx"):
            return importlib.import_module(root)
    raise ImportError("the openai SDK's HTTP library was not found")


http: Any = _sdk_http_library()

MAX_HEAD_BYTES = 64 * 1024
READ_SIZE = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})
_Origin = tuple[str, str, int]


class _Connection:
    """One socket to an origin. While a read is pending it has a deadline, which one timer
    per connection enforces: a read only moves the deadline (httpx's read timeout applies
    to each wait for data, not to the time the caller spends between reads)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.timed_out = False
        self._loop = asyncio.get_running_loop()
        self._deadline: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    def usable(self, now: float, keepalive_expiry: float) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof() or now - self.idle_since > keepalive_expiry)

    def reading(self, timeout: float | None) -> None:
        """A read starts: it must return within `timeout` seconds (None: no limit)."""
        if timeout is None:
            return
        self._deadline = self._loop.time() + timeout
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(self._deadline, self._check)

    def read_done(self) -> None:
        self._deadline = None

    def _check(self) -> None:
        self._watchdog = None
        if self._deadline is None:
            return  # not reading now: the next read re-arms the timer
        if self._loop.time() >= self._deadline:
            self.timed_out = True
            self.writer.transport.abort()  # the pending read ends; its reader reports the timeout
        else:
            self._watchdog = self._loop.call_at(self._deadline, self._check)

    def close(self) -> None:
        self._deadline = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.writer.transport.abort()


class StreamingTransport(http.AsyncBaseTransport):  # type: ignore[misc]
    """httpx transport: HTTP/1.1 over asyncio streams, keep-alive connections per origin."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, keepalive_expiry: float = 5.0, max_idle_per_origin: int = 512) -> None:
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._max_idle = max_idle_per_origin
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._closed = False

    def idle_connections(self) -> int:
        return sum(len(connections) for connections in self._idle.values())

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.scheme not in ("http", "https"):
            raise http.UnsupportedProtocol(f"Unsupported URL protocol {request.url.scheme!r}", request=request)
        timeouts = request.extensions.get("timeout", {})
        origin: _Origin = (request.url.scheme, request.url.host, request.url.port or (443 if request.url.scheme == "https" else 80))
        payload = _serialise(request, await request.aread())
        while True:
            connection, reused = self._checkout(origin), True
            if connection is None:
                connection, reused = await self._connect(origin, request, timeouts.get("connect")), False
            try:
                await self._write(connection, payload, request, timeouts.get("write"))
                status, reason, headers = await self._read_head(connection, request, timeouts.get("read"))
                body = _Body(self, origin, connection, request, headers, status, timeouts.get("read"))
            except _StaleConnection:
                connection.close()
                if reused:
                    continue  # the server closed a kept-alive socket before reading: retry on a new one
                raise http.RemoteProtocolError("Server disconnected without sending a response.", request=request) from None
            except BaseException:  # e.g. an invalid Content-Length: the socket is not reused
                connection.close()
                raise
            return http.Response(
                status, headers=headers, stream=body, extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason}
            )

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    # -- connections -------------------------------------------------------------------
    def _checkout(self, origin: _Origin) -> _Connection | None:
        connections = self._idle.get(origin)
        now = time.monotonic()
        while connections:
            connection = connections.pop()
            if connection.usable(now, self._keepalive_expiry):
                return connection
            connection.close()
        return None

    def checkin(self, origin: _Origin, connection: _Connection) -> None:
        connections = self._idle.setdefault(origin, [])
        if self._closed or len(connections) >= self._max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        connections.append(connection)

    async def _connect(self, origin: _Origin, request: httpx2.Request, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        context = None
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = http.create_ssl_context()
            context = self._ssl_context
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, ssl=context, limit=MAX_HEAD_BYTES)
        except TimeoutError:
            raise http.ConnectTimeout(f"Timed out connecting to {host}:{port}", request=request) from None
        except OSError as error:
            raise http.ConnectError(str(error) or f"Could not connect to {host}:{port}", request=request) from error
        return _Connection(reader, writer)

    @staticmethod
    async def _write(connection: _Connection, payload: bytes, request: httpx2.Request, timeout: float | None) -> None:
        try:
            connection.writer.write(payload)
            if connection.writer.transport.get_write_buffer_size():
                async with asyncio.timeout(timeout):
                    await connection.writer.drain()
        except TimeoutError:
            raise http.WriteTimeout("Timed out sending the request", request=request) from None
        except OSError:
            raise _StaleConnection from None

    @staticmethod
    async def _read_head(
        connection: _Connection, request: httpx2.Request, timeout: float | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        while True:
            connection.reading(timeout)
            try:
                head = await connection.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as error:
                if connection.timed_out:
                    raise http.ReadTimeout("Timed out waiting for the response", request=request) from None
                if not error.partial:
                    raise _StaleConnection from None
                raise http.RemoteProtocolError("Server disconnected in the middle of the response head", request=request) from None
            except asyncio.LimitOverrunError:
                raise http.RemoteProtocolError("Response head too large", request=request) from None
            except OSError as error:
                if connection.timed_out:
                    raise http.ReadTimeout("Timed out waiting for the response", request=request) from None
                raise _StaleConnection from error
            connection.read_done()
            status, reason, headers = _parse_head(head, request)
            if status >= 200 or status == 101:
                return status, reason, headers
            # An interim 1xx answer (100 Continue, 103 Early Hints): the real one follows.


class _StaleConnection(Exception):
    """The connection ended before any of the response arrived."""


class _Body(http.AsyncByteStream):  # type: ignore[misc]
    """The response body as it arrives: chunked, of a known length, or until the server closes."""

    def __init__(
        self,
        transport: StreamingTransport,
        origin: _Origin,
        connection: _Connection,
        request: httpx2.Request,
        headers: list[tuple[bytes, bytes]],
        status: int,
        timeout: float | None,
    ) -> None:
        self._transport = transport
        self._origin = origin
        self._connection: _Connection | None = connection
        self._request = request
        self._timeout = timeout
        values = {name.lower(): value for name, value in headers}
        self._keep_alive = b"close" not in values.get(b"connection", b"").lower()
        self._chunked = b"chunked" in values.get(b"transfer-encoding", b"").lower()
        length = values.get(b"content-length")
        if request.method == "HEAD" or status in _NO_BODY_STATUSES or 100 <= status < 200:
            self._remaining: int | None = 0
        elif self._chunked:
            self._remaining = None
        elif length is not None:
            try:
                self._remaining = int(length)
            except ValueError:
                raise http.RemoteProtocolError("Invalid Content-Length", request=request) from None
        else:
            self._remaining, self._keep_alive = None, False  # ends when the server closes
        self._complete = False
        self._unread = bytearray()  # chunked: read from the socket, not yet decoded

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The body's bytes from where the last iteration stopped: the SDK stops reading an
        event stream at `[DONE]` and then drains the rest in a new iteration, and the socket
        goes back to the pool only if that one finds the body's end. A plain async iterator,
        not an async generator: every stream is left unfinished at `[DONE]`, and an unfinished
        async generator is closed later by a task the event loop schedules for it."""
        return _Pieces(self)

    async def next_piece(self) -> bytes | None:
        """What the next network read completes of the body; None at its end."""
        connection = self._connection
        if connection is None or self._complete:
            return None
        if self._chunked:
            return await self._next_chunked(connection)
        if self._remaining is None:
            data = await self._read(connection, READ_SIZE, until_close=True)
            self._complete = not data
            return data or None
        if not self._remaining:
            self._complete = True
            return None
        data = await self._read(connection, min(self._remaining, READ_SIZE))
        self._remaining -= len(data)
        self._complete = not self._remaining
        return data

    async def _read(self, connection: _Connection, size: int, *, until_close: bool = False) -> bytes:
        connection.reading(self._timeout)
        try:
            data = await connection.reader.read(size)
        except OSError as error:
            if connection.timed_out:
                raise http.ReadTimeout("Timed out reading the response", request=self._request) from None
            raise http.ReadError(str(error) or "The connection broke", request=self._request) from error
        if not data:
            if connection.timed_out:
                raise http.ReadTimeout("Timed out reading the response", request=self._request)
            if not until_close:
                raise http.RemoteProtocolError(
                    "peer closed connection without sending complete message body", request=self._request
                )
        connection.read_done()
        return data

    async def _next_chunked(self, connection: _Connection) -> bytes | None:
        """Decode `Transfer-Encoding: chunked`, returning whatever the network reads complete:
        a read of several small chunks (events) is one piece, not several. What was read but
        not yet decoded stays on the body for the next call; the body is complete as soon as
        the last chunk is decoded, before its data is handed over."""
        buffer = self._unread
        while True:
            out = bytearray()
            position = 0
            while True:
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    break
                try:
                    size = int(bytes(buffer[position:line_end]).split(b";", 1)[0], 16)
                except ValueError:
                    raise http.RemoteProtocolError("Invalid chunk size in the response body", request=self._request) from None
                if size == 0:
                    if buffer.find(b"\r\n\r\n", line_end) < 0:
                        break  # the trailer section has not fully arrived
                    buffer.clear()
                    self._complete = True
                    return bytes(out) if out else None
                data_start = line_end + 2
                if len(buffer) < data_start + size + 2:
                    break
                out += buffer[data_start : data_start + size]
                position = data_start + size + 2
            del buffer[:position]
            if out:
                return bytes(out)
            buffer += await self._read(connection, READ_SIZE)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._complete and self._keep_alive:
            self._transport.checkin(self._origin, connection)
        else:
            connection.close()  # part of the body is unread: the socket cannot carry another request


class _Pieces:
    """One iteration of a body (see `_Body.__aiter__`)."""

    def __init__(self, body: _Body) -> None:
        self._body = body

    def __aiter__(self) -> _Pieces:
        return self

    async def __anext__(self) -> bytes:
        piece = await self._body.next_piece()
        if piece is None:
            raise StopAsyncIteration
        return piece


def _serialise(request: httpx2.Request, body: bytes) -> bytes:
    target = request.url.raw_path or b"/"
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), target)]
    for name, value in request.headers.raw:
        if name.lower() in (b"transfer-encoding", b"content-length"):
            continue  # the whole body is sent with its length
        lines.append(name + b": " + value)
    if body or request.method not in ("GET", "HEAD"):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _parse_head(head: bytes, request: httpx2.Request) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    status_line, *header_lines = head[:-4].split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise http.RemoteProtocolError(f"Invalid response status line: {status_line[:100]!r}", request=request)
    headers = []
    for line in header_lines:
        name, separator, value = line.partition(b":")
        if not separator:
            raise http.RemoteProtocolError("Invalid response header line", request=request)
        headers.append((name.strip(), value.strip()))
    return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers
