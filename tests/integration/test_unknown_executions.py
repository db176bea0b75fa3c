"""An execution a node reports that the leader's mirror has never shown is cancelled as a
stray only once it has stayed unknown for a grace period: the mirror may trail KV (a new
leader's, or one whose watch was re-created after its nats-server died), and the execution may
be one the leader before it placed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import orchestrator.registry
from shared import subjects, wire
from shared.bus import Bus
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.stack import stack

GRACE = 1.0


async def test_an_unknown_execution_is_cancelled_only_after_the_grace(
    nats_server: EmbeddedNats, tmp_path: Path, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orchestrator.registry, "UNKNOWN_GRACE", GRACE)
    async with stack(nats_server.url, tmp_path, agents=0):
        commands = await bus.subscription(subjects.compute_cmd("ghost"))
        hello = wire.Hello(
            node=wire.NodeInfo(id="ghost", engines=["noop"]),
            running=[wire.RunningExecution(id="e-nobody-placed", job_id="j-nobody")],
            boot_id="b-1",
        )
        began = time.monotonic()
        raw = await bus.request(subjects.node_hello("ghost"), wire.encode(hello), timeout=5)
        reply = wire.decode(raw, wire.ApiReply)
        assert reply.ok, reply
        assert wire.decode(reply.data, wire.HelloReply).cancel == []  # not yet a stray
        cancels: list[float] = []

        async def heartbeats() -> None:
            for seq in range(1, 1000):
                beat = wire.Heartbeat(
                    node_id="ghost",
                    seq=seq,
                    free=wire.Capacity(cpu_millis=1000),
                    running=["e-nobody-placed"],
                    boot_id="b-1",
                )
                await bus.publish(subjects.node_heartbeat("ghost"), wire.encode(beat))
                await asyncio.sleep(0.05)

        async def cancelled() -> bool:
            while (msg := await commands.next(timeout=0.05)) is not None:
                command = wire.decode(msg.data, wire.CancelCommand)
                assert command.execution_id == "e-nobody-placed", command
                cancels.append(time.monotonic())
            return bool(cancels)

        beating = asyncio.create_task(heartbeats())
        try:
            await eventually(cancelled, timeout=10, what="the stray cancelled")
        finally:
            beating.cancel()
            await commands.close()
        waited = cancels[0] - began
        # Heartbeats every 50 ms: without the grace the first one was answered with a cancel.
        assert waited >= GRACE - 0.05, f"cancelled {waited:.2f} s after it was first reported"
