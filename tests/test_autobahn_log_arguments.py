"""Autobahn's WebSocket module highlights its debug-log arguments only when a log line is
written (chatproject/autobahn_log_arguments.py), and a written line reads as before."""
from __future__ import annotations

import pytest
from autobahn import util
from autobahn.websocket import protocol

from chatproject.autobahn_log_arguments import format_log_arguments_on_demand


class _Unprintable:
    def __str__(self) -> str:
        raise AssertionError("formatted although no log line was written")


@pytest.fixture(autouse=True)
def on_demand() -> None:
    format_log_arguments_on_demand()


def test_a_log_line_reads_as_before() -> None:
    line = "{func} sent {data_len} bytes for peer {peer}"
    written = line.format(
        func=protocol.hltype(protocol.WebSocketServerProtocol.sendData),
        peer=protocol.hlval("tcp:127.0.0.1:50000"),
        data_len=protocol.hlval(42),
    )
    assert written == line.format(
        func=util.hltype(protocol.WebSocketServerProtocol.sendData),
        peer=util.hlval("tcp:127.0.0.1:50000"),
        data_len=util.hlval(42),
    )
    assert str(protocol.hlval("reason", color="red", bold=False)) == util.hlval("reason", color="red", bold=False)


def test_an_argument_is_not_formatted_unless_a_line_is_written() -> None:
    argument = protocol.hlval(_Unprintable())
    with pytest.raises(AssertionError, match="no log line"):
        str(argument)


def test_installing_twice_changes_nothing() -> None:
    format_log_arguments_on_demand()
    assert str(protocol.hlval(7)) == util.hlval(7)
