"""Three nats-servers from deploy/nats: replicas 3, losing a member, orchestrator failover."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cli.auth import generate
from compute.agent import AgentConfig, ComputeAgent
from orchestrator.service import Orchestrator, OrchestratorConfig
from shared import subjects
from shared.bus import KV, Bus, Entry
from shared.client import ShoalClient
from shared.errors import ShoalError
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.e2e.jetstream_state import STATE, js_info, led_without

REPO = Path(__file__).resolve().parents[2]
CLUSTER_CONF = REPO / "deploy" / "nats" / "nats-cluster.conf"
NODES = ("node-1", "node-2")
NOOP = {
    "Name": "clustered",
    "Type": "batch",
    "Count": 2,
    "Tasks": [{"Name": "main", "Engine": {"Type": "noop", "Params": {"Stdout": "ok\n"}}}],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    servers: list[EmbeddedNats]
    auth: Path
    buses: list[Bus] = field(default_factory=list)
    agents: list[ComputeAgent] = field(default_factory=list)

    def creds(self, identity: str) -> str:
        return str(self.auth / "creds" / f"{identity}.creds")

    async def bus(self, identity: str, server: int) -> Bus:
        """A connection to one member (it learns the others from the server, as in k8s)."""
        bus = await Bus.connect(
            self.servers[server].url, creds=self.creds(identity), name=identity, replicas=3
        )
        self.buses.append(bus)
        return bus

    @property
    def url(self) -> str:
        return ",".join(s.url for s in self.servers if s.pid is not None)

    async def agent(self, name: str, server: int, tmp: Path) -> ComputeAgent:
        config = AgentConfig(name=name, heartbeat_interval=0.2, state_dir=tmp / name)
        agent = ComputeAgent(await self.bus(name, server), config)
        await agent.start()
        self.agents.append(agent)
        await agent.wait_registered(15)
        return agent


async def jetstream_ready(bus: Bus) -> bool:
    try:
        reply = json.loads(await bus.request("$JS.API.INFO", b"", timeout=1))
    except ShoalError:
        return False
    return "error" not in reply


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    auth = tmp_path / "auth"
    generate(auth, nodes=list(NODES), orchestrators=2, users=["alice"])
    conf = auth / "nats-cluster.conf"  # beside users.conf, which it includes
    shutil.copyfile(CLUSTER_CONF, conf)
    routes = [free_port() for _ in range(3)]
    monkeypatch.setenv("NATS_ROUTES", json.dumps([f"nats://127.0.0.1:{p}" for p in routes]))
    servers: list[EmbeddedNats] = []
    env = Cluster(servers, auth)
    try:
        for i, route in enumerate(routes):
            monkeypatch.setenv("NATS_SERVER_NAME", f"nats-{i}")
            server = EmbeddedNats(
                tmp_path / f"nats-{i}",
                config=conf,
                extra_args=("--cluster", f"nats://127.0.0.1:{route}", "-m", str(free_port())),
            )
            servers.append(server)
            await server.start()
        probe = await env.bus("orchestrator-1", 0)
        await eventually(lambda: jetstream_ready(probe), timeout=30, what="JetStream meta leader")
        yield env
    finally:
        for agent in env.agents:
            await agent.stop()
        for bus in env.buses:
            await bus.close()
        for server in servers:
            await server.stop()


async def stream_replicas(bus: Bus, stream: str) -> int:
    info = json.loads(await bus.request(f"$JS.API.STREAM.INFO.{stream}", b""))
    assert "error" not in info, info
    return int(info["config"]["num_replicas"])


async def run_job(client: ShoalClient, name: str, timeout: float = 45) -> str:
    job_id = await client.submit({**NOOP, "Name": name})
    try:
        view = await client.wait(job_id, timeout=timeout)
    except TimeoutError:
        stuck = await client.describe(job_id)
        history = await client.history(job_id)
        raise AssertionError(f"{name} did not finish: {stuck}\n{history}") from None
    assert view.state == "Completed", view
    assert {e.node_id for e in view.executions} == set(NODES)
    return view.id


async def test_replicated_state_survives_losing_a_server(cluster: Cluster, tmp_path: Path) -> None:
    config = OrchestratorConfig(heartbeat_interval=0.2, disconnect_timeout=5.0, bid_timeout=3.0)
    async with Orchestrator(await cluster.bus("orchestrator-1", 0), config) as orch:
        for stream in STATE:
            assert await stream_replicas(orch.bus, stream) == 3, stream
        await cluster.agent("node-1", 1, tmp_path)
        await cluster.agent("node-2", 2, tmp_path)
        async with await ShoalClient.connect(cluster.url, cluster.creds("alice")) as alice:
            await run_job(alice, "before")

        # SIGKILL the member the orchestrator is connected to: it, and the state it leads,
        # move to the two that are left.
        cluster.servers[0].kill()
        await cluster.servers[0].stop()  # reaps it; `cluster.url` now lists the other two
        await eventually(
            lambda: led_without(orch.bus, "nats-0"), timeout=30, interval=0.5, what="re-election"
        )
        async with await ShoalClient.connect(cluster.url, cluster.creds("alice")) as alice:
            job_id = await alice.submit({**NOOP, "Name": "after"})
            view = await alice.wait(job_id, timeout=60)
            assert view.state == "Completed", view
            out = b"".join([line.data async for line in alice.logs(job_id)])
            assert b"ok\n" in out


async def test_one_leader_and_failover(cluster: Cluster, tmp_path: Path) -> None:
    orchs = []
    for i in (1, 2):
        config = OrchestratorConfig(
            heartbeat_interval=0.2,
            disconnect_timeout=5.0,
            bid_timeout=3.0,
            lease_ttl=2.0,
            name=f"orchestrator-{i}",
        )
        orch = Orchestrator(await cluster.bus(f"orchestrator-{i}", i - 1), config)
        await orch.start()
        orchs.append(orch)
    try:
        await eventually(lambda: sum(o.leading for o in orchs) == 1, what="one leader")
        deadline = time.monotonic() + 2.5  # more than a lease: still exactly one
        while time.monotonic() < deadline:
            assert sum(o.leading for o in orchs) == 1, [o.leading for o in orchs]
            await asyncio.sleep(0.1)
        leader = next(o for o in orchs if o.leading)
        follower = next(o for o in orchs if not o.leading)
        await cluster.agent("node-1", 1, tmp_path)
        await cluster.agent("node-2", 2, tmp_path)
        async with await ShoalClient.connect(cluster.url, cluster.creds("alice")) as alice:
            await run_job(alice, "first")

        # The leader's process dies: its connection drops, its lease is never renewed.
        lost = time.monotonic()
        await leader.bus.close()
        await eventually(lambda: follower.leading, timeout=10, what="the follower takes over")
        took = time.monotonic() - lost
        assert took < 3 * 2.0, f"takeover took {took:.1f}s with a 2s lease"
        async with await ShoalClient.connect(cluster.url, cluster.creds("alice")) as alice:
            await run_job(alice, "second")
    finally:
        for orch in orchs:
            await orch.stop()


async def test_a_watch_catches_up_soon_after_the_server_holding_it_dies(cluster: Cluster) -> None:
    """The orchestrators' mirrors are KV watches: ordered consumers, each held by one server.
    When that server dies, the watch is re-created from where it was. With nats-py's default
    idle heartbeat (5 s, re-created after two missed) it stayed 15-20 s behind; every answer
    read from that mirror, and a new leader's view of what runs where, was that stale."""
    bus = await cluster.bus("orchestrator-1", 0)
    seen: dict[str, float] = {}

    async def follow(kv: KV) -> None:
        entry: Entry | None
        async for entry in kv.watch():
            if entry is not None:
                seen[entry.key] = time.monotonic()

    async def put(via: Bus, key: str) -> float:
        try:
            await (await via.kv(subjects.NODES_BUCKET)).put(key, b"1")
        except ShoalError:
            return 0.0  # no stream leader (yet)
        return time.monotonic()

    await eventually(lambda: put(bus, "before"), timeout=30, what="the bucket")
    watching = asyncio.create_task(follow(await bus.kv(subjects.NODES_BUCKET)))
    try:
        await eventually(lambda: "before" in seen, what="the watch")
        stream = f"KV_{subjects.NODES_BUCKET}"
        listed = await js_info(bus, f"$JS.API.CONSUMER.LIST.{stream}")
        assert listed is not None and len(listed["consumers"]) == 1, listed
        host = listed["consumers"][0]["cluster"]["leader"]
        cluster.servers[int(host.rsplit("-", 1)[1])].kill()

        alive = next(i for i in range(3) if f"nats-{i}" != host)
        writer = await cluster.bus("orchestrator-1", alive)
        await eventually(lambda: put(writer, "after"), timeout=30, what="a write after the loss")
        # A consumer is created through JetStream's meta leader, which the cluster may have
        # to elect again (4-9 s, its own timer): time the watch from when it could be re-made.
        await eventually(
            lambda: jetstream_ready(writer), timeout=30, interval=0.05, what="a meta leader"
        )
        ready = time.monotonic()
        await eventually(lambda: "after" in seen, timeout=30, what="the watch to see it")
        behind = seen["after"] - ready
        # Two missed heartbeats (1-2 s), then the re-create: 0-3 s here, 10-15 s before.
        assert behind < 5.0, f"the watch saw the write {behind:.1f} s after it could"
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
