"""The cost of one KV write, through nats-py's KV and through Shoal's bus, alone and many at
once, on the chosen event loop.

.venv/bin/python -m bench.kvwrite [N]                      # uvloop (the product default)
SHOAL_EVENT_LOOP=asyncio .venv/bin/python -m bench.kvwrite # the standard loop
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats

from cli.common import run
from shared.bus import Bus
from shared.natsserver import EmbeddedNats

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000  # per figure
VALUE = b"x" * 300  # about a job record


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="shoal-kvwrite-") as tmp:
        server = EmbeddedNats(Path(tmp))
        await server.start()
        nc = await nats.connect(server.url)
        bus = await Bus.connect(server.url)
        try:
            for _ in range(2):  # twice, alternating: the machine's speed drifts
                await _natspy(nc)
                await _bus(bus)
        finally:
            await bus.close()
            await nc.close()
            await server.stop()


async def _natspy(nc: nats.NATS) -> None:
    kv = await nc.jetstream().create_key_value(bucket="natspy")
    await _measure("nats-py", lambda rev: kv.update("k", VALUE, last=rev), kv.put)


async def _bus(bus: Bus) -> None:
    kv = await bus.kv("bus")
    await _measure("bus", lambda rev: kv.update("k", VALUE, rev), kv.put)


async def _measure(
    via: str,
    update: Callable[[int], Awaitable[int]],
    put: Callable[[str, bytes], Awaitable[int]],
) -> None:
    revision = await put("k", VALUE)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(N):
        revision = await update(revision)
    _report(via, "sequential CAS updates", cpu, wall)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(put(f"k{i}", VALUE) for i in range(N)))
    _report(via, f"{N} puts at once", cpu, wall)


def _report(via: str, what: str, cpu: float, wall: float) -> None:
    cpu_us = (time.process_time() - cpu) / N * 1e6
    wall_us = (time.perf_counter() - wall) / N * 1e6
    loop = os.environ.get("SHOAL_EVENT_LOOP", "uvloop")
    print(f"{loop:8} {via:8} {what:24} {cpu_us:7.1f} us CPU  {wall_us:7.1f} us wall per write")


if __name__ == "__main__":
    run(main())
