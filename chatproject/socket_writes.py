"""Socket writes of a serving process, sent when they are made (`AGENTS_DIRECT_SOCKET_WRITES`).

Daphne serves through Twisted, whose TCP connection never sends in `write`: it appends the
bytes to a buffer, registers the socket for writability (an `epoll_ctl` and the asyncio
selector's bookkeeping), sends on the next turn of the event loop and unregisters it again.
Every stream frame to every socket paid that round; the `send` itself was a small
part of it. With writes sent at once the server spent less CPU per streamed token: 25 % for one
paced chat (a frame per token), 6–18 % for 20, 2–8 % for 50 or 200 (whose frames carry two
or three tokens each).

A write is sent at once only when nothing is waiting in the connection's buffer, so bytes
stay in order. What the socket does not take (its send buffer is full), and any write the
socket refuses, goes through Twisted's own buffered path, which also reports a lost
connection from the reactor as before: a peer that went away is found by the same code.
"""
from __future__ import annotations

from twisted.internet import tcp

_buffered_write = tcp.Connection.write


def _write(self: tcp.Connection, data: bytes) -> None:
    if (
        isinstance(data, bytes)
        and data
        and self.connected
        and not self._writeDisconnected
        and not self._tempDataBuffer
        and self.offset == len(self.dataBuffer)
    ):
        sent = self.writeSomeData(data)
        if isinstance(sent, int):
            if sent == len(data):
                return
            data = data[sent:]
    _buffered_write(self, data)


def send_writes_at_once() -> None:
    """Make every TCP connection of this process send its writes at once when it can. Call
    once, in the serving process."""
    tcp.Connection.write = _write  # type: ignore[method-assign]
