"""A node record that cannot be stored (every compare-and-swap lost) is never acted on as if
it had been: the hello is not answered as registered, a silent node is not taken for lost."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from compute.agent import AgentConfig, ComputeAgent
from orchestrator.service import Orchestrator
from shared import subjects
from shared.bus import Bus
from shared.errors import Conflict
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.stack import FAST, Stack, leading
from tests.kv_doubles import StandIn, ThroughBus


class LosingWrites(StandIn):
    """Every update loses its compare-and-swap while `losing` is set, as if another
    orchestrator always wrote the record first."""

    def __init__(self) -> None:
        self.losing = False
        self.lost = 0

    async def update(self, key: str, value: bytes, revision: int) -> int:
        if self.losing:
            self.lost += 1
            raise Conflict(f"{self.bucket}/{key} changed meanwhile (injected)")
        return await self.inner.update(key, value, revision)


class Recorded:
    """The orchestrator's node events, passed on and recorded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        handler = getattr(self.inner, name)

        def record(node_id: str, *args: Any) -> Any:
            self.calls.append((name, node_id))
            return handler(node_id, *args)

        return record


@asynccontextmanager
async def losing_stack(url: str, tmp: Path) -> AsyncIterator[tuple[Stack, LosingWrites, Recorded]]:
    nodes = LosingWrites()
    s = Stack(url, tmp)
    try:
        bus = await Bus.connect(url, name="orchestrator")
        s.orchestrator = Orchestrator(
            bus, FAST, buckets=ThroughBus(bus, {subjects.NODES_BUCKET: nodes})
        )
        await s.orchestrator.start()
        await leading(s.orchestrator)
        events = Recorded(s.orchestrator.registry.events)
        s.orchestrator.registry.events = events
        yield s, nodes, events
    finally:
        await s.close()


async def test_a_hello_whose_record_is_not_stored_is_not_answered_as_registered(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with losing_stack(nats_server.url, tmp_path) as (s, nodes, events):
        assert s.orchestrator is not None
        nodes.losing = True
        bus = await Bus.connect(nats_server.url, name="node-0")
        s._buses.append(bus)
        agent = ComputeAgent(
            bus, AgentConfig(name="node-0", heartbeat_interval=0.2, state_dir=tmp_path / "n0")
        )
        await agent.start()
        s.agents["node-0"] = agent
        # Two hellos' writes all lost (or the first answered as if it had been stored).
        await eventually(lambda: nodes.lost >= 10 or agent.registered, what="two hellos")
        assert not agent.registered, "answered as registered with no record stored"
        assert "node-0" not in s.orchestrator.mirror.nodes
        assert ("node_ready", "node-0") not in events.calls
        nodes.losing = False
        await agent.wait_registered(10)
        assert "node-0" in s.orchestrator.mirror.nodes
        await eventually(lambda: ("node_ready", "node-0") in events.calls, what="node ready")


async def test_a_silent_node_is_lost_only_once_that_is_stored(
    nats_server: EmbeddedNats, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="orchestrator.registry")
    async with losing_stack(nats_server.url, tmp_path) as (s, nodes, events):
        assert s.orchestrator is not None
        mirror = s.orchestrator.mirror
        await s.add_agent("node-0")
        nodes.losing = True
        await s.kill_agent("node-0")
        await eventually(
            lambda: "node node-0 not marked lost yet" in caplog.text,
            what="a sweep that could not store the loss",
        )
        assert mirror.nodes["node-0"].value.connection == "CONNECTED"
        assert ("node_lost", "node-0") not in events.calls
        nodes.losing = False
        await eventually(
            lambda: mirror.nodes["node-0"].value.connection == "DISCONNECTED", what="stored"
        )
        await eventually(lambda: ("node_lost", "node-0") in events.calls, what="node lost")
