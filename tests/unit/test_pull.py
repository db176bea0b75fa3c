"""The continuous pull loop against a scripted source (the real one is exercised by every
integration test that applies an update)."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from shared.errors import Unavailable
from shared.pull import Status, pull_forever


class Script:
    """Answers `next()` from a list of steps: a message, a Status, None (nothing came), or an
    exception to raise. `ready()` hands over whatever the step after it lists as ready."""

    def __init__(self, steps: list[object]) -> None:
        self.steps: deque[object] = deque(steps)
        self.requests: list[int] = []
        self.epoch = 0
        self.extra: list[object] = []
        self.recovered = 0

    async def request(self, batch: int, expires: float, heartbeat: float) -> None:
        self.requests.append(batch)

    async def next(self, timeout: float) -> object:
        await asyncio.sleep(0)
        if not self.steps:
            raise asyncio.CancelledError  # the script is over: end the loop
        step = self.steps.popleft()
        if isinstance(step, Exception):
            raise step
        if isinstance(step, tuple):  # (first, *already arrived)
            first, *rest = step
            self.extra = list(rest)
            return first
        return step

    def ready(self) -> list[object]:
        out, self.extra = self.extra, []
        return out

    async def recover(self) -> None:
        self.recovered += 1


async def run(
    script: Script, batch: int = 4, pauses: list[float] | None = None
) -> list[list[object]]:
    handled: list[list[object]] = []

    async def handle(msgs: list[object]) -> None:
        handled.append(msgs)

    async def on_error(exc: Exception) -> None:
        pass

    async def pause(seconds: float) -> None:
        if pauses is not None:
            pauses.append(seconds)

    with pytest.raises(asyncio.CancelledError):
        await pull_forever(
            script,  # type: ignore[arg-type]
            handle,
            batch=batch,
            on_error=on_error,
            pause=pause,
        )
    return handled


async def test_messages_that_arrived_together_are_handled_together() -> None:
    script = Script([("a", "b", Status(100), "c"), "d"])
    assert await run(script) == [["a", "b", "c"], ["d"]]
    # 4 asked for; 3 came (only 1 left): topped up to 4, then 3 outstanding, no new request
    assert script.requests == [4, 3]


async def test_an_expired_request_is_renewed_by_what_it_left_unfilled() -> None:
    script = Script(["a", Status(408, unfilled=3), "b"])
    await run(script)
    # after "a": 3 outstanding (> 4 // 2); the 408 says those 3 are gone: ask for 4 again
    assert script.requests == [4, 4]


async def test_silence_or_a_status_without_count_starts_over() -> None:
    script = Script([None, Status(409), "a"])
    assert await run(script) == [["a"]]
    assert script.requests == [4, 4, 4]


async def test_refusals_are_retried_after_a_growing_pause() -> None:
    """No consumer answering (503) must not become a busy loop of requests and refusals."""
    pauses: list[float] = []
    script = Script([Status(503)] * 7 + ["a", Status(409)])
    assert await run(script, pauses=pauses) == [["a"]]
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 0.05]  # a message starts it over
    assert len(script.requests) == 9
    assert script.recovered == 1  # after the fifth refusal in a row


async def test_heartbeats_keep_the_requests() -> None:
    script = Script([Status(100), Status(100), "a"])
    await run(script)
    assert script.requests == [4]


async def test_a_reconnect_forgets_outstanding_requests() -> None:
    class Reconnecting(Script):
        async def next(self, timeout: float) -> object:
            self.epoch = 1  # the connection came back: the server holds nothing for us
            return await super().next(timeout)

    again = Reconnecting(["a", "b"])
    await run(again)
    assert again.requests == [4, 4]


async def test_nats_trouble_is_retried_not_fatal() -> None:
    script = Script([Unavailable("no NATS"), "a"])
    assert await run(script) == [["a"]]
    assert script.requests == [4, 4]
