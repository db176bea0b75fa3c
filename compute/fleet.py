"""Many compute agents in one process (`shoal compute --virtual K`), for scale tests.

Each virtual node is a full agent on the wire (own id, hello, heartbeats, bids, executions);
they share one NATS connection and one wildcard subscription per subject kind, so ten
thousand nodes cost three subscriptions instead of thirty thousand.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from compute.agent import AgentConfig, ComputeAgent
from compute.engines.base import Engine
from compute.engines.noop import NoopEngine
from shared import subjects
from shared.bus import Bus, Message
from shared.lifecycle import Service


class Fleet(Service):
    def __init__(
        self, bus: Bus, base: AgentConfig, count: int, *, start_rate: float = 2000.0
    ) -> None:
        self.bus = bus
        self.base = base
        self.count = count
        self.start_rate = start_rate  # hellos per second, so the orchestrator is not flooded
        noop: dict[str, Engine] = {"noop": NoopEngine()}
        self.agents: dict[str, ComputeAgent] = {}
        for i in range(count):
            name = f"{base.name}-{i}"
            config = dataclasses.replace(base, name=name, state_dir=base.state_dir / name)
            self.agents[name] = ComputeAgent(bus, config, engines=noop)

    async def start(self) -> None:
        for kind, handler in (("bid", "on_bid"), ("cmd", "on_command"), ("results", "on_results")):
            await self.bus.subscribe(f"{subjects.PREFIX}.compute.*.{kind}", self._route(handler))
        for i, agent in enumerate(self.agents.values()):
            await agent.start(subscribe=False)
            if (i + 1) % 100 == 0:
                await asyncio.sleep(100 / self.start_rate)

    def _route(self, handler: str) -> Callable[[Message], Awaitable[None]]:
        async def route(msg: Message) -> None:
            agent = self.agents.get(msg.subject.split(".")[3])
            if agent is not None:
                await getattr(agent, handler)(msg)

        return route

    async def stop(self) -> None:
        await asyncio.gather(*(a.stop() for a in self.agents.values()))
