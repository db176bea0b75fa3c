"""Continuous pull from a durable JetStream consumer, over a transport `Bus` provides.

Pull requests stay outstanding on the server and messages are handled as they arrive (the way
nats.go's `Consume` works), topped up when half of what was asked for has come. A fetch loop
instead pays a no-wait probe, its "no messages" answer and a new long poll for every batch:
three more messages per update when updates come one at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from shared.errors import ShoalError

M = TypeVar("M")

HEARTBEAT = 100
PAUSE_FIRST, PAUSE_MAX = 0.05, 1.0


@dataclass(frozen=True, slots=True)
class Status:
    """A pull status from the server rather than a stream message.

    `unfilled` is how many messages of the request it ends were never delivered
    (`Nats-Pending-Messages`), or None when the server did not say."""

    code: int
    unfilled: int | None = None


class PullSource(Protocol, Generic[M]):
    @property
    def epoch(self) -> int:
        """Changes when the connection was re-established: outstanding requests are gone."""
        ...

    async def request(self, batch: int, expires: float, heartbeat: float) -> None: ...

    async def next(self, timeout: float) -> M | Status | None:
        """The next message or status; None if nothing (not even a heartbeat) came in time."""
        ...

    def ready(self) -> list[M | Status]:
        """Whatever has already arrived, without waiting."""
        ...

    async def recover(self) -> None:
        """Refused again and again: make sure the consumer exists (someone may have deleted
        it, or its stream)."""
        ...


async def pull_forever(
    source: PullSource[M],
    handle: Callable[[list[M]], Awaitable[None]],
    *,
    batch: int,
    expires: float = 30.0,
    heartbeat: float = 2.0,
    on_error: Callable[[ShoalError], Awaitable[None]],
    pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Forever: keep up to `batch` messages requested and hand what arrives to `handle`, in
    arrival order, as many at once as are already there. A refusal (no consumer answering
    while its stream elects a leader, too many waiting requests) is retried after a pause that
    grows to a second, not at once."""
    outstanding = 0
    epoch = source.epoch
    refused = 0
    while True:
        if source.epoch != epoch:
            epoch, outstanding = source.epoch, 0
        try:
            if outstanding <= batch // 2:
                await source.request(batch - outstanding, expires, heartbeat)
                outstanding = batch
            got = await source.next(heartbeat * 2.5)
        except ShoalError as exc:
            outstanding = 0
            await on_error(exc)
            continue
        if got is None:  # not even a heartbeat: the server no longer holds our requests
            outstanding = 0
            continue
        msgs: list[M] = []
        lost = False
        for item in (got, *source.ready()):
            if not isinstance(item, Status):
                msgs.append(item)
                outstanding -= 1
            elif item.code == HEARTBEAT:
                continue
            elif item.unfilled is not None:  # one request expired (408) or was cut short
                outstanding -= item.unfilled
            else:  # e.g. 503 no responders, 409 leadership change: every request is gone
                outstanding, lost = 0, True
        outstanding = max(outstanding, 0)
        if msgs:
            refused = 0
            await handle(msgs)
        elif lost:
            await pause(min(PAUSE_FIRST * 2**refused, PAUSE_MAX))
            refused += 1
            if refused % 5 == 0:  # about 1.5 s, then every 5 s
                try:
                    await source.recover()
                except ShoalError as exc:
                    await on_error(exc)
