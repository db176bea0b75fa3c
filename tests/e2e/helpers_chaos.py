"""The chaos suite's cluster: three nats-servers from deploy/nats with `shoal auth init` users,
and Shoal's orchestrators and agents as real processes, so SIGKILL and SIGSTOP are real."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cli.auth import generate
from orchestrator.leader import LEASE_KEY
from shared import subjects
from shared.bus import KV, Bus
from shared.client import ShoalClient
from shared.errors import ShoalError
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.e2e.jetstream_state import LEASE, js_info, led_without
from tests.e2e.jetstream_state import STATE as STATE_STREAMS
from tests.integration.helpers_jobs import SHOAL, free_port

REPO = Path(__file__).resolve().parents[2]
CLUSTER_CONF = REPO / "deploy" / "nats" / "nats-cluster.conf"
HEARTBEAT = 0.2
DISCONNECT = 1.5
NODES = ("node-1", "node-2", "node-3", "node-4")
ORCHESTRATORS = ("orchestrator-1", "orchestrator-2")
OBSERVER = "orchestrator-3"  # the test's own identity for JetStream and lease reads
USER = "alice"
T = TypeVar("T")
STATE = (*STATE_STREAMS, LEASE)


async def until(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """`eventually()` for an async check, typed so mypy infers T (not Never)."""
    poll: Callable[[], Awaitable[T] | T] = check
    return await eventually(poll, timeout=timeout, interval=interval, what=what)


class ShoalProcess:
    """One `shoal` command as a child process; its output goes to `<logdir>/<name>.log`."""

    def __init__(self, name: str, args: list[str], logdir: Path) -> None:
        self.name = name
        self.args = args
        self.log = logdir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.started_at = 0.0  # wall clock, comparable with a node's last_seen

    async def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.started_at = time.time()
        with self.log.open("ab") as out:
            out.write(f"==== start {self.starts} at {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self.proc = await asyncio.create_subprocess_exec(
                str(SHOAL), *self.args, stdout=out, stderr=asyncio.subprocess.STDOUT
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, like a crashed host."""
        if self.proc is not None and self.alive:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    def pause(self) -> None:
        assert self.proc is not None and self.alive, f"{self.name} is not running"
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.alive:
            self.proc.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        if self.proc is None or not self.alive:
            return
        self.resume()  # a stopped process cannot handle SIGTERM
        self.proc.terminate()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            await self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


class ChaosCluster:
    """Three nats-servers from deploy/nats (with `shoal auth init` users), two orchestrators,
    four agents, and the test's own connections: `client` (a user) and `observer`."""

    def __init__(self, tmp: Path, setenv: Callable[[str, str], None]) -> None:
        self.tmp = tmp
        self.auth = tmp / "auth"
        self._setenv = setenv  # nats-server reads its name and routes from the environment
        self.servers: list[EmbeddedNats] = []
        self.orchestrators: dict[str, ShoalProcess] = {}
        self.agents: dict[str, ShoalProcess] = {}
        self._buses: list[Bus] = []
        self._lease: KV | None = None
        self._observer: Bus | None = None
        self._client: ShoalClient | None = None

    @property
    def url(self) -> str:
        return ",".join(s.url for s in self.servers)

    @property
    def observer(self) -> Bus:
        assert self._observer is not None
        return self._observer

    @property
    def client(self) -> ShoalClient:
        assert self._client is not None
        return self._client

    def creds(self, identity: str) -> str:
        return str(self.auth / "creds" / f"{identity}.creds")

    async def start(self) -> None:
        generate(self.auth, nodes=list(NODES), orchestrators=3, users=[USER])
        conf = self.auth / "nats-cluster.conf"  # beside users.conf, which it includes
        shutil.copyfile(CLUSTER_CONF, conf)
        routes = [free_port() for _ in range(3)]
        self._setenv("NATS_ROUTES", json.dumps([f"nats://127.0.0.1:{p}" for p in routes]))
        for i, route in enumerate(routes):
            self._setenv("NATS_SERVER_NAME", f"nats-{i}")
            server = EmbeddedNats(
                self.tmp / f"nats-{i}",
                config=conf,
                extra_args=("--cluster", f"nats://127.0.0.1:{route}", "-m", str(free_port())),
            )
            self.servers.append(server)
            await server.start()
        # Long-lived connections that reconnect (not the CLI's fail-fast one).
        self._observer = await self._connect(OBSERVER)
        self._client = ShoalClient(await self._connect(USER), timeout=5.0)
        await until(self._jetstream_ready, timeout=30, what="JetStream meta leader")
        # One orchestrator first: it creates the streams and buckets, then the other joins.
        await self.start_orchestrator(ORCHESTRATORS[0])
        await self.start_orchestrator(ORCHESTRATORS[1])
        self._lease = await self.observer.kv(subjects.LEADER_BUCKET)  # exists by now
        await asyncio.gather(*(self.start_agent(n) for n in NODES))

    async def _connect(self, identity: str) -> Bus:
        bus = await Bus.connect(self.url, creds=self.creds(identity), name=identity, replicas=3)
        self._buses.append(bus)
        return bus

    async def _jetstream_ready(self) -> bool:
        info = await self.js_info("$JS.API.INFO")
        return info is not None

    async def js_info(self, api: str) -> dict[str, Any] | None:
        """A JetStream API answer, or None while the cluster cannot give one."""
        return await js_info(self.observer, api)

    # ---- processes -----------------------------------------------------------------------------

    async def start_orchestrator(self, name: str) -> None:
        proc = self.orchestrators.get(name)
        if proc is None:
            args = ["--nats", self.url, "--creds", self.creds(name), "orchestrator"]
            args += ["--replicas", "3", "--name", name]
            args += [
                "--heartbeat-interval",
                str(HEARTBEAT),
                "--disconnect-timeout",
                str(DISCONNECT),
            ]
            proc = self.orchestrators[name] = ShoalProcess(name, args, self.tmp / "logs")
        await proc.start()

        # "<name> started (leader|follower)" is logged once it serves the API.
        async def started() -> bool:
            return proc.output().count(f"{name} started (") >= proc.starts

        await until(
            started,
            timeout=30,
            interval=0.1,
            what=f"{name} to start",
        )

    async def start_agent(self, name: str) -> None:
        proc = self.agents.get(name)
        if proc is None:
            args = ["--nats", self.url, "--creds", self.creds(name), "compute", "--name", name]
            args += ["--engines", "noop,wasm", "--heartbeat-interval", str(HEARTBEAT)]
            args += ["--replicas", "3"]  # its result bucket survives a server, as the state does
            args += ["--state-dir", str(self.tmp / "agents")]
            proc = self.agents[name] = ShoalProcess(name, args, self.tmp / "logs")
        await proc.start()
        await until(
            lambda: self.node_is(name, "CONNECTED", since=proc.started_at),
            timeout=30,
            interval=0.1,
            what=f"{name} to register",
        )

    async def restart_server(self, index: int) -> None:
        self._setenv("NATS_SERVER_NAME", f"nats-{index}")
        await self.servers[index].start(timeout=30)  # same port, store and route

    async def close(self) -> None:
        procs = [*self.agents.values(), *self.orchestrators.values()]
        await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)
        for bus in self._buses:
            await bus.close()
        for server in self.servers:
            await server.stop()

    def tails(self) -> str:
        parts = [f"---- {p.name} ----\n{p.tail()}" for p in self.orchestrators.values()]
        parts += [f"---- {p.name} ----\n{p.tail(20)}" for p in self.agents.values()]
        return "\n".join(parts)

    # ---- observations --------------------------------------------------------------------------

    async def lease_holder(self) -> str | None:
        assert self._lease is not None
        try:
            entry = await self._lease.get(LEASE_KEY)
        except ShoalError:
            return None
        return entry.value.decode() if entry is not None and entry.value else None

    async def node_is(self, name: str, connection: str, since: float = 0.0) -> bool:
        try:
            node = await self.client.node(name)
        except ShoalError:
            return False
        return node.connection == connection and node.last_seen >= since

    async def stream_leaders(self) -> dict[str, str | None]:
        leaders: dict[str, str | None] = {}
        for stream in STATE:
            info = await self.js_info(f"$JS.API.STREAM.INFO.{stream}")
            leaders[stream] = None if info is None else info.get("cluster", {}).get("leader")
        return leaders

    async def led_without(self, dead: str) -> bool:
        """Every stream and durable consumer of Shoal's state has a leader other than `dead`."""
        return await led_without(self.observer, dead, STATE)

    async def replicas_current(self) -> bool:
        """Every stream of Shoal's state has a leader and two current, online followers."""
        for stream in STATE:
            info = await self.js_info(f"$JS.API.STREAM.INFO.{stream}")
            cluster = {} if info is None else info.get("cluster", {})
            peers = cluster.get("replicas") or []
            if not cluster.get("leader") or len(peers) != 2:
                return False
            if not all(p.get("current") and not p.get("offline") for p in peers):
                return False
        return True
