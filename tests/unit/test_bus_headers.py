"""The bus's connection reads a message's headers exactly as nats-py's own does, the odd
blocks a hostile or sloppy publisher sends included."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from shared.bus._client import NatsClient

BLOCKS = [
    b"Nats-Expected-Last-Subject-Sequence: 1411\r\n\r\n",
    b"KV-Operation: DEL\r\nNats-Expected-Last-Subject-Sequence: 7\r\n\r\n",
    b"Nats-Marker-Reason: MaxAge\r\n\r\n",
    b"Name:Value\r\nOther:\tTabbed \r\n",
    b"  Padded  :  value  \r\n",
    b"Has Space: dropped\r\nKept: yes\r\n",
    b"Tab\tInside: dropped\r\n",
    b"Sep\x1cArator: dropped (str.isspace says \\x1c is whitespace)\r\n",
    b"Caf\xc3\xa9: non-ASCII name, dropped\r\n",
    b"Value: caf\xc3\xa9 \xff broken\r\n",
    b"no colon at all\r\n\r\nLater: still read\r\n",
    b": empty name\r\n",
    b"Dup: one\r\nDup: two\r\n",
    b"Url: http://host:4222/x\r\n",
    b"",
    b"\r\n\r\n",
]


@pytest.mark.parametrize("raw", BLOCKS)
def test_a_header_block_reads_as_nats_py_reads_it(raw: bytes) -> None:
    assert NatsClient._parse_header_lines(raw) == Client._parse_header_lines(raw)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_read_as_nats_py_reads_them(raw: bytes) -> None:
    assert NatsClient._parse_header_lines(raw) == Client._parse_header_lines(raw)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(st.characters(max_codepoint=0x7F), max_size=12),
            st.text(max_size=12),
        ),
        max_size=5,
    )
)
def test_any_lines_read_as_nats_py_reads_them(lines: list[tuple[str, str]]) -> None:
    raw = b"".join(f"{name}:{value}\r\n".encode() for name, value in lines) + b"\r\n"
    assert NatsClient._parse_header_lines(raw) == Client._parse_header_lines(raw)


def test_the_bus_connects_with_it() -> None:
    from shared import bus

    assert issubclass(NatsClient, Client)
    assert bus.NatsClient is NatsClient
