"""retry_cas: retries a lost compare-and-swap, and says so when it gives up."""

from __future__ import annotations

import pytest

from shared.cas import CAS_ATTEMPTS, retry_cas
from shared.errors import Conflict, Unavailable


async def test_a_lost_write_is_tried_again_with_a_fresh_read() -> None:
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(len(calls))
        if len(calls) < 3:
            raise Conflict("wrong revision")
        return "stored"

    assert await retry_cas(attempt, what="node n1") == "stored"
    assert len(calls) == 3


async def test_giving_up_raises_conflict_naming_the_record() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise Conflict("wrong revision")

    with pytest.raises(Conflict, match=r"node n1 kept changing: 5 writes in a row lost") as info:
        await retry_cas(attempt, what="node n1")
    assert calls == CAS_ATTEMPTS
    assert isinstance(info.value.__cause__, Conflict)


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise Unavailable("no server")

    with pytest.raises(Unavailable):
        await retry_cas(attempt, what="job j1")
    assert calls == 1
