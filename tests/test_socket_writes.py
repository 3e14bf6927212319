"""Daphne's TCP connections send a write at once when nothing is buffered
(chatproject/socket_writes.py): over a real TCP socket pair and Twisted's own connection
class, without running the reactor."""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from twisted.internet import tcp
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Protocol

from chatproject.socket_writes import send_writes_at_once


@pytest.fixture
def reactor() -> Iterator[AsyncioSelectorReactor]:
    loop = asyncio.new_event_loop()
    yield AsyncioSelectorReactor(loop)
    loop.close()


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
    ours.setblocking(False)
    peer.settimeout(5)
    yield ours, peer
    ours.close()
    peer.close()


@pytest.fixture
def connection(reactor: AsyncioSelectorReactor, sockets: tuple[socket.socket, socket.socket]) -> Iterator[tcp.Connection]:
    send_writes_at_once()
    connection = tcp.Connection(sockets[0], Protocol(), reactor)
    connection.connected = True
    yield connection
    if connection in reactor.getWriters():
        reactor.removeWriter(connection)


def receive(peer: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        received += peer.recv(size - len(received))
    return received


def test_a_write_reaches_the_peer_without_waiting_for_the_reactor(connection, sockets, reactor) -> None:
    connection.write(b'{"type":"cf_agent_use_chat_response"}')

    assert receive(sockets[1], 37) == b'{"type":"cf_agent_use_chat_response"}'
    assert connection not in reactor.getWriters()


def test_what_the_socket_cannot_take_is_sent_by_the_reactor_after_it_in_order(connection, sockets, reactor) -> None:
    sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    large = bytes(range(256)) * 16_384  # 4 MiB: more than the socket's buffers hold
    connection.write(large)
    head = sockets[1].recv(1 << 16)  # room in the socket again, with the rest still buffered
    connection.write(b"and then this")

    assert connection in reactor.getWriters()  # the rest waits for writability, as before
    expected = large + b"and then this"
    received = head
    sockets[1].settimeout(0.05)
    while len(received) < len(expected):
        try:
            received += sockets[1].recv(1 << 20)
        except TimeoutError:
            connection.doWrite()  # what the reactor does once the socket is writable
    assert received == expected
    assert connection not in reactor.getWriters()


def test_a_write_to_a_peer_that_went_away_is_reported_by_the_reactor_as_before(connection, sockets, reactor) -> None:
    sockets[1].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sockets[1].close()  # a reset: the next send fails
    receive_reset(sockets[0])

    connection.write(b"too late")

    assert connection in reactor.getWriters()
    assert isinstance(connection.doWrite(), ConnectionLost)


def receive_reset(ours: socket.socket) -> None:
    """Wait until our side has seen the peer's reset."""
    ours.setblocking(True)
    ours.settimeout(5)
    with pytest.raises(ConnectionResetError):
        ours.recv(1)
    ours.setblocking(False)


def test_text_is_refused_as_twisted_refuses_it(connection) -> None:
    with pytest.raises(TypeError):
        connection.write("text, not bytes")  # type: ignore[arg-type]
