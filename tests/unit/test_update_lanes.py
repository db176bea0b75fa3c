"""The update applier's lane key never raises, whatever bytes a node published."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.updates import _lane


class _Msg:
    def __init__(self, data: bytes) -> None:
        self.data = data


@pytest.mark.parametrize(
    "data",
    [
        b'{"ExecutionID":"e-d94\x9d7fac"}',  # invalid UTF-8 in a string: UnicodeDecodeError
        b'{"ExecutionID":"e-\x1d"}',  # an unescaped control character
        b"[" * 5000 + b"]" * 5000,  # deeper than msgspec recurses
        b"\xff\xfe",
        b'{"ExecutionID": 7}',
        b"",
    ],
)
def test_malformed_updates_share_the_empty_lane(data: bytes) -> None:
    msg: Any = _Msg(data)
    assert _lane(msg) == ""


def test_a_good_update_has_its_execution_as_lane() -> None:
    msg: Any = _Msg(b'{"ExecutionID":"e-1","State":"running"}')
    assert _lane(msg) == "e-1"
