"""Virtual compute nodes that speak the wire protocol from one process: hello, then heartbeats.

They behave like `compute/agent.py` does on the wire (hello until answered, a heartbeat every
interval, a fresh hello every 30 s) but run nothing: they exist to load the orchestrator.
Run standalone as `python -m bench.fleet --nats URL --count K`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field

from compute.identity import default_labels
from shared import subjects, wire
from shared.bus import Bus
from shared.errors import ShoalError

log = logging.getLogger(__name__)

REHELLO_SECONDS = 30.0  # what compute/agent.py does
SLICES = 20  # heartbeats are spread over the interval in this many bursts


@dataclass(slots=True)
class VirtualNode:
    info: wire.NodeInfo
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    registered: bool = False
    silent: bool = False
    last_beat: float = 0.0


def node_info(node_id: str, engines: tuple[str, ...] = ("noop",)) -> wire.NodeInfo:
    return wire.NodeInfo(
        id=node_id,
        labels=default_labels(node_id),
        engines=list(engines),
        publishers=["noop"],
        sources=[],
        capacity=wire.Capacity(cpu_millis=2000, memory_bytes=4 * 2**30, disk_bytes=0),
        version="0.1.0-bench",
    )


class VirtualFleet:
    """K nodes over one NATS connection; `silence(id)` stops one node's heartbeats."""

    def __init__(
        self,
        bus: Bus,
        names: list[str],
        *,
        interval: float = 1.0,
        hello_concurrency: int = 64,
    ) -> None:
        self.bus = bus
        self.interval = interval
        self.nodes = {n: VirtualNode(node_info(n)) for n in names}
        self._hello_slots = asyncio.Semaphore(hello_concurrency)
        self._tasks: set[asyncio.Task[bool]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.hello_failures = 0

    async def _hello(self, node: VirtualNode) -> bool:
        hello = wire.Hello(node=node.info, boot_id=node.boot_id)
        async with self._hello_slots:
            try:
                raw = await self.bus.request(
                    subjects.node_hello(node.info.id), wire.encode(hello), timeout=5.0
                )
                reply = wire.decode(raw, wire.ApiReply, what="hello reply")
            except ShoalError as exc:
                self.hello_failures += 1
                log.debug("hello from %s: %s", node.info.id, exc)
                return False
        if not reply.ok:
            self.hello_failures += 1
            return False
        answer = wire.decode(reply.data, wire.HelloReply, what="hello reply")
        if answer.heartbeat_interval > 0:
            self.interval = answer.heartbeat_interval
        node.registered = True
        return True

    async def register(self, timeout: float = 300.0) -> float:
        """Say hello for every node (retrying refusals); seconds it took."""
        started = time.monotonic()
        async with asyncio.timeout(timeout):
            while pending := [n for n in self.nodes.values() if not n.registered]:
                await asyncio.gather(*(self._hello(n) for n in pending))
        return time.monotonic() - started

    def start(self) -> None:
        """Start heartbeating (each node from its first answered hello on)."""
        self._ticker = asyncio.create_task(self._beat_forever())

    def _spawn_hello(self, node: VirtualNode) -> None:
        task = asyncio.create_task(self._hello(node))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _beat_forever(self) -> None:
        nodes = list(self.nodes.values())
        rehello_every = max(round(REHELLO_SECONDS / self.interval), 1)
        tick = 0
        next_at = time.monotonic()
        while True:
            part = nodes[tick % SLICES :: SLICES]
            now = time.time()
            for node in part:
                if node.silent or not node.registered:
                    continue  # like the agent: heartbeats only once the hello was answered
                node.seq += 1
                # Stagger the periodic hellos by node, as independently started agents are.
                if (node.seq + hash(node.info.id)) % rehello_every == 0:
                    self._spawn_hello(node)
                beat = wire.Heartbeat(
                    node_id=node.info.id,
                    seq=node.seq,
                    free=node.info.capacity,
                    boot_id=node.boot_id,
                    sent_at=now,
                )
                try:
                    await self.bus.publish(subjects.node_heartbeat(node.info.id), wire.encode(beat))
                    node.last_beat = now
                except ShoalError as exc:
                    log.debug("heartbeat from %s: %s", node.info.id, exc)
            tick += 1
            next_at += self.interval / SLICES
            await asyncio.sleep(max(next_at - time.monotonic(), 0))

    def silence(self, node_id: str) -> float:
        """Stop one node's heartbeats; returns the wall time of its last one."""
        node = self.nodes[node_id]
        node.silent = True
        return node.last_beat

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._ticker] if self._ticker else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _main(url: str, count: int, prefix: str, interval: float, connections: int) -> None:
    names = [f"{prefix}-{i}" for i in range(count)]
    buses = [await Bus.connect(url, name=f"bench-fleet-{i}") for i in range(connections)]
    fleets = [
        VirtualFleet(bus, names[i::connections], interval=interval) for i, bus in enumerate(buses)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for f in fleets:
            f.start()
        took = await asyncio.gather(*(f.register() for f in fleets))
        print(f"registered {count} {max(took):.2f}", flush=True)
        await stop.wait()
    finally:
        for f in fleets:
            await f.stop()
        for bus in buses:
            await bus.close()
    failures = sum(f.hello_failures for f in fleets)
    print(f"stopped; {failures} hello(s) failed or timed out", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", default="vnode")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_main(args.nats, args.count, args.prefix, args.interval, args.connections))


if __name__ == "__main__":
    main()
