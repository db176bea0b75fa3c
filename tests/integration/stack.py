"""A test stack: orchestrator and agents on a real nats-server, each with its own connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from compute.agent import AgentConfig, ComputeAgent
from orchestrator.service import Orchestrator, OrchestratorConfig
from shared.bus import Bus
from shared.client import ShoalClient
from tests.conftest import eventually

FAST = OrchestratorConfig(heartbeat_interval=0.2, disconnect_timeout=1.5, bid_timeout=2.0)


class Stack:
    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.orchestrator: Orchestrator | None = None
        self.agents: dict[str, ComputeAgent] = {}
        self._buses: list[Bus] = []

    async def start_orchestrator(self, config: OrchestratorConfig = FAST) -> Orchestrator:
        bus = await Bus.connect(self.url, name="orchestrator")
        self._buses.append(bus)
        self.orchestrator = Orchestrator(bus, config)
        await self.orchestrator.start()
        await leading(self.orchestrator)
        return self.orchestrator

    async def stop_orchestrator(self) -> None:
        if self.orchestrator is not None:
            await self.orchestrator.stop()
            await self.orchestrator.bus.close()
            self.orchestrator = None

    async def add_agent(self, name: str, **kwargs: object) -> ComputeAgent:
        bus = await Bus.connect(self.url, name=name)
        self._buses.append(bus)
        config = AgentConfig(
            name=name, heartbeat_interval=0.2, state_dir=self.tmp / "agents" / name, **kwargs
        )  # type: ignore[arg-type]
        agent = ComputeAgent(bus, config)
        await agent.start()
        await agent.wait_registered(10)
        self.agents[name] = agent
        return agent

    async def kill_agent(self, name: str) -> None:
        """Stop heartbeats and drop the connection without reporting anything (a crash)."""
        agent = self.agents.pop(name)
        await agent.bus.close()
        await agent.stop()

    async def client(self) -> ShoalClient:
        return await ShoalClient.connect(self.url)

    async def close(self) -> None:
        for agent in list(self.agents.values()):
            await agent.stop()
        await self.stop_orchestrator()
        for bus in self._buses:
            await bus.close()


async def leading(orchestrator: Orchestrator) -> None:
    """Wait until the stack's one orchestrator holds the scheduling lease: start() stops waiting
    for it after lease_ttl / 2, and on a cold machine the lease bucket can take longer, while
    what a test submits then is only queued, not evaluated at once."""
    await eventually(lambda: orchestrator.leading, what="the orchestrator leading")


@asynccontextmanager
async def stack(
    url: str, tmp: Path, agents: int = 2, **agent_kwargs: object
) -> AsyncIterator[Stack]:
    s = Stack(url, tmp)
    try:
        await s.start_orchestrator()
        for i in range(agents):
            await s.add_agent(f"node-{i}", **agent_kwargs)
        yield s
    finally:
        await s.close()
