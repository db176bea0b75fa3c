"""Bus.consume against a real nats-server: messages arrive through outstanding pull requests,
and a durable consumer that someone deleted is made again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from shared.bus import Bus, StreamMessage
from tests.conftest import eventually


@contextlib.asynccontextmanager
async def consuming(bus: Bus) -> AsyncIterator[list[bytes]]:
    """Consume WORK (work.>) as the durable `worker`; yields what arrived, in order."""
    await bus.ensure_stream("WORK", ["work.>"], work_queue=True)
    got: list[bytes] = []

    async def handle(msgs: list[StreamMessage]) -> None:
        for m in msgs:
            got.append(m.data)
            await m.ack()

    task = asyncio.create_task(bus.consume("WORK", "worker", "work.>", handle, batch=8))
    try:
        yield got
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_messages_one_by_one_and_in_bursts_arrive_in_order(bus: Bus) -> None:
    async with consuming(bus) as got:
        await bus.js_publish("work.a", b"0")
        await eventually(lambda: got == [b"0"])
        # more than one batch at once: the requests are topped up as they are used
        for i in range(1, 30):
            await bus.js_publish("work.a", str(i).encode())
        await eventually(lambda: len(got) == 30)
        assert got == [str(i).encode() for i in range(30)]


async def test_a_deleted_consumer_is_made_again(bus: Bus) -> None:
    async with consuming(bus) as got:
        await bus.js_publish("work.a", b"before")
        await eventually(lambda: got == [b"before"])
        await bus._js.delete_consumer("WORK", "worker")
        await bus.js_publish("work.a", b"after")
        await eventually(lambda: got == [b"before", b"after"], timeout=10)


async def test_many_stream_reads_in_a_row_leave_no_consumers(bus: Bus) -> None:
    """Each read's ephemeral consumer is deleted when the read ends: the server refuses a
    stream's 1001st consumer, and before this a burst of history reads hit that."""
    await bus.ensure_stream("READS", ["reads.>"])
    # Acknowledged writes: stored before the first read. A flushed core publish may not be
    # stored yet, and a read then saw nothing (CI, once in many runs).
    for i in range(3):
        await bus.js_publish(f"reads.{i}", b"x")
    for i in range(1100):
        got = [m.data async for m in bus.replay("READS", f"reads.{i % 3}")]
        assert got == [b"x"], (i, got)
