"""The cost of one KV write through nats-py, alone and batched, on the chosen event loop.

.venv/bin/python -m bench.kvwrite                          # uvloop (the product default)
SHOAL_EVENT_LOOP=asyncio .venv/bin/python -m bench.kvwrite # the standard loop
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import nats

from cli.common import run
from shared.natsserver import EmbeddedNats

N = 3000
VALUE = b"x" * 300  # about a job record


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="shoal-kvwrite-") as tmp:
        server = EmbeddedNats(Path(tmp))
        await server.start()
        nc = await nats.connect(server.url)
        try:
            kv = await nc.jetstream().create_key_value(bucket="bench")
            revision = await kv.put("k", VALUE)
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(N):
                revision = await kv.update("k", VALUE, last=revision)
            _report("sequential CAS updates", cpu, wall)
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(kv.put(f"k{i}", VALUE) for i in range(N)))
            _report(f"{N} puts at once", cpu, wall)
        finally:
            await nc.close()
            await server.stop()


def _report(what: str, cpu: float, wall: float) -> None:
    cpu_us = (time.process_time() - cpu) / N * 1e6
    wall_us = (time.perf_counter() - wall) / N * 1e6
    loop = os.environ.get("SHOAL_EVENT_LOOP", "uvloop")
    print(f"{loop:8} {what:24} {cpu_us:7.1f} us CPU  {wall_us:7.1f} us wall per write")


if __name__ == "__main__":
    run(main())
