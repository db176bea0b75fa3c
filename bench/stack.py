"""A benchmark stack: nats-server, `shoal orchestrator` and agents, each in its own process."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bench.procs import SHOAL, Child, Usage, free_port, usage
from orchestrator.service import OrchestratorConfig
from shared.client import ShoalClient
from shared.errors import ShoalError
from shared.natsserver import EmbeddedNats

DEFAULTS = OrchestratorConfig()


@dataclass(frozen=True, slots=True)
class StackConfig:
    agents: int = 3
    heartbeat_interval: float = DEFAULTS.heartbeat_interval
    disconnect_timeout: float = DEFAULTS.disconnect_timeout
    client_timeout: float = 60.0


def traffic(monitor_port: int, name: str) -> dict[str, int]:
    """Messages and bytes the named connection(s) sent and received, from nats /connz
    (the server's view: `in_msgs` are what the connection published)."""
    url = f"http://127.0.0.1:{monitor_port}/connz?limit=100000"
    with urllib.request.urlopen(url, timeout=10) as reply:
        conns = json.load(reply).get("connections", [])
    out = {"in_msgs": 0, "out_msgs": 0, "in_bytes": 0, "out_bytes": 0}
    for conn in conns:
        if conn.get("name") == name:
            for key in out:
                out[key] += int(conn.get(key, 0))
    return out


class ShoalStack:
    """Each component in its own process, so the orchestrator's CPU and memory are its own."""

    def __init__(self, workdir: Path, config: StackConfig | None = None) -> None:
        self.workdir = workdir
        self.config = config or StackConfig()
        self.monitor_port = free_port()
        self.nats = EmbeddedNats(workdir / "nats", extra_args=("-m", str(self.monitor_port)))
        self.orchestrator: Child | None = None
        self.agents: dict[str, Child] = {}
        self._client: ShoalClient | None = None

    @property
    def url(self) -> str:
        return self.nats.url

    @property
    def client(self) -> ShoalClient:
        assert self._client is not None, "start() first"
        return self._client

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def orchestrator_usage(self) -> Usage:
        assert self.orchestrator is not None
        self.orchestrator.check()
        return self.orchestrator.usage()

    def nats_usage(self) -> Usage:
        assert self.nats.pid is not None
        return usage(self.nats.pid)

    def traffic(self, name: str = "shoal-orchestrator") -> dict[str, int]:
        return traffic(self.monitor_port, name)

    def agents_cpu(self) -> float:
        return sum(a.usage().cpu for a in self.agents.values() if a.alive)

    async def start(self) -> None:
        await self.nats.start()
        self.orchestrator = Child(
            "orchestrator",
            [
                str(SHOAL),
                "--nats",
                self.url,
                "orchestrator",
                "--heartbeat-interval",
                str(self.config.heartbeat_interval),
                "--disconnect-timeout",
                str(self.config.disconnect_timeout),
            ],
            self.logs,
        )
        self._client = await ShoalClient.connect(self.url, timeout=self.config.client_timeout)
        await self._until_api()
        await self.add_agents([f"node-{i}" for i in range(self.config.agents)])

    async def _until_api(self, timeout: float = 30.0) -> None:
        probe = await ShoalClient.connect(self.url, timeout=1.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                assert self.orchestrator is not None
                self.orchestrator.check()
                try:
                    await probe.nodes()
                    return
                except ShoalError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            "the orchestrator did not answer in time:\n" + self.orchestrator.tail()
                        ) from None
                    await asyncio.sleep(0.1)
        finally:
            await probe.close()

    async def add_agents(self, names: list[str], timeout: float = 30.0) -> None:
        """Start `shoal compute` processes (noop engine) and wait until they are CONNECTED."""
        for name in names:
            self.agents[name] = Child(
                name,
                [
                    str(SHOAL),
                    "--nats",
                    self.url,
                    "compute",
                    "--name",
                    name,
                    "--engines",
                    "noop",
                    "--max-executions",
                    "0",
                    "--heartbeat-interval",
                    str(self.config.heartbeat_interval),
                    "--state-dir",
                    str(self.workdir / "compute"),
                ],
                self.logs,
            )
        await self.until_connected(set(names), timeout)

    async def until_connected(self, names: set[str], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for name in names:
                if name in self.agents:
                    self.agents[name].check()
            nodes = await self.client.nodes()
            connected = {n.id for n in nodes if n.connection == "CONNECTED"}
            if names <= connected:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes not connected in time: {sorted(names - connected)}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        for agent in self.agents.values():
            agent.proc.terminate()
        for agent in self.agents.values():
            await agent.stop()
        self.agents.clear()
        if self.orchestrator is not None:
            await self.orchestrator.stop()
            self.orchestrator = None
        await self.nats.stop()

    async def __aenter__(self) -> ShoalStack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
