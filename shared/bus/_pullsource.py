"""The transport `shared.pull` drives: pull requests to one durable consumer."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from shared.bus._errors import map_nats_errors
from shared.bus._handles import StreamMessage
from shared.pull import Status


class _PullSource:
    """`shared.pull`'s transport: pull requests to one durable consumer, answered on an inbox."""

    def __init__(
        self,
        nc: NatsClient,
        stream: str,
        durable: str,
        recover: Callable[[], Awaitable[None]],
    ) -> None:
        self._nc = nc
        self._recover = recover
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub: Any = None
        self.name = durable

    async def open(self) -> None:
        async def arrived(msg: Msg) -> None:
            self._queue.put_nowait(msg)

        with map_nats_errors(f"subscribe for {self.name}"):
            self._sub = await self._nc.subscribe(
                self._inbox, cb=arrived, pending_msgs_limit=1_000_000
            )

    @property
    def epoch(self) -> int:
        return int(self._nc.stats["reconnects"])

    async def recover(self) -> None:
        await self._recover()

    async def request(self, batch: int, expires: float, heartbeat: float) -> None:
        nanos = 1_000_000_000
        body = {
            "batch": batch,
            "expires": int(expires * nanos),
            "idle_heartbeat": int(heartbeat * nanos),
        }
        with map_nats_errors(f"pull from {self.name}"):
            await self._nc.publish(self._next, json.dumps(body).encode(), reply=self._inbox)

    async def next(self, timeout: float) -> StreamMessage | Status | None:
        try:
            async with asyncio.timeout(timeout):
                msg = await self._queue.get()
        except TimeoutError:
            return None
        return self._wrap(msg)

    def ready(self) -> list[StreamMessage | Status]:
        out: list[StreamMessage | Status] = []
        while not self._queue.empty():
            out.append(self._wrap(self._queue.get_nowait()))
        return out

    @staticmethod
    def _wrap(msg: Msg) -> StreamMessage | Status:
        status = msg.headers.get("Status") if msg.headers else None
        if not status:
            return StreamMessage(msg)
        unfilled = (msg.headers or {}).get("Nats-Pending-Messages", "")
        return Status(
            int(status) if status.isdigit() else 0, int(unfilled) if unfilled.isdigit() else None
        )

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
