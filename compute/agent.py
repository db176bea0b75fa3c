"""The compute agent: says hello, heartbeats, bids on offers, runs and cancels executions."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from compute import capacity, metrics
from compute.bidding import BUSY_RESOURCES, BUSY_SLOTS, image_refusal, refusal
from compute.engine_setup import make_engines, usable_engines
from compute.engines.base import Engine
from compute.engines.docker_registry import DEFAULT_PULL_POLICY, DEFAULT_PULL_TIMEOUT, PullPolicy
from compute.executor import Execution, run_execution
from compute.identity import node_key, node_labels
from compute.inputs import SUPPORTED_SOURCES, AllowedPath
from compute.logs import LogShipper
from compute.publish_remote import IPFSPublisher, S3Publisher
from compute.publishers import LocalPublisher, NatsPublisher, NoopPublisher, Publisher
from compute.reporting import store_update
from compute.task_env import open_secrets
from shared import ipfs, sealing, subjects, trace, wire
from shared.bus import Bus, Message, Subscription
from shared.errors import InvalidSpec, ShoalError
from shared.lifecycle import Service, Supervisor
from shared.spec import JobSpec, spec_from_canonical

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    engines: tuple[str, ...] = ("wasm", "noop")
    cpu_millis: int = 0  # 0 = this machine's cores
    memory_bytes: int = 0  # 0 = this machine's memory
    disk_bytes: int = 0
    gpus: int = 0
    max_executions: int = 0
    allow_local_paths: tuple[AllowedPath, ...] = ()
    heartbeat_interval: float = 1.0
    state_dir: Path = Path(".shoal/compute")
    network: bool = True
    log_limit: int = 8 * 1024 * 1024
    # Images (docker): pulled when missing, always, or never (then a bid needs the image here).
    image_pull: PullPolicy = DEFAULT_PULL_POLICY
    pull_timeout: float = DEFAULT_PULL_TIMEOUT
    registry_auth: Path | None = None  # a docker config.json; None: docker's own


@dataclass(slots=True)
class _Running:
    execution: Execution
    task: asyncio.Task[None]
    demand: wire.Capacity


class ComputeAgent(Service):
    def __init__(
        self, bus: Bus, config: AgentConfig, engines: dict[str, Engine] | None = None
    ) -> None:
        subjects.check_token(config.name, "node name")
        self.bus = bus
        self.config = config
        self.node_id = config.name
        self._engines_given = engines
        self.engines: dict[str, Engine] = {}
        self.boot_id = uuid.uuid4().hex
        self.capacity = capacity.node_capacity(
            cpu_millis=config.cpu_millis,
            memory_bytes=config.memory_bytes,
            disk_bytes=config.disk_bytes,
            gpus=config.gpus,
            max_executions=config.max_executions,
        )
        self.approval: wire.Approval = "PENDING"
        self._running: dict[str, _Running] = {}
        # The sum of the running executions' demands, kept rather than summed: free() is asked
        # on every bid and every heartbeat, and a busy node runs thousands of executions.
        self._used = wire.Capacity()
        self._finished: dict[str, float] = {}
        self._specs: dict[tuple[str, int], JobSpec] = {}
        self._children = Supervisor(f"agent-{config.name}")
        self.local_results = LocalPublisher(config.state_dir / "results")
        self.publishers: dict[str, Publisher] = {
            "nats": NatsPublisher(bus, self.node_id),  # its own bucket (results hand-off)
            "local": self.local_results,
            "noop": NoopPublisher(),
            "s3": S3Publisher(config.name),  # credentials are checked when it publishes
        }
        # "ipfs" (publisher and source) joins in start() if an IPFS API answers
        self.sources = [s for s in SUPPORTED_SOURCES if s != "ipfs"]
        self._hello_done = asyncio.Event()
        self.heartbeat_interval = config.heartbeat_interval  # the orchestrator may override
        self._stopping = False
        self._subs: list[Subscription] = []
        self._key: X25519PrivateKey | None = None  # read (or made) in start()
        self.public_key = ""  # base64, as the hello carries it
        self._unobserve: Callable[[], None] | None = None  # its part in the metrics' gauges

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, subscribe: bool = True) -> None:
        """Probe engines, listen for bids/commands (unless a Fleet routes them), heartbeat."""
        config = self.config
        if self._key is None:
            self._key = node_key(config.state_dir)
            self.public_key = sealing.b64(sealing.public_bytes(self._key))
        candidates = self._engines_given or make_engines(
            config.engines,
            self.node_id,
            image_pull=config.image_pull,
            pull_timeout=config.pull_timeout,
            registry_auth=config.registry_auth,
        )
        self.engines = await usable_engines(
            candidates, config.engines, self.node_id, keep=set(self._running)
        )
        api = ipfs.api_url()
        if await ipfs.probe(api):
            self.publishers["ipfs"] = IPFSPublisher(api)
            self.sources.append("ipfs")
        await self._children.start()
        if subscribe:
            self._subs = [
                await self.bus.subscribe(subjects.compute_bid(self.node_id), self.on_bid),
                await self.bus.subscribe(subjects.compute_cmd(self.node_id), self.on_command),
                await self.bus.subscribe(subjects.compute_results(self.node_id), self.on_results),
            ]
        self._children.spawn(self._heartbeats(), name=f"{self.node_id}-heartbeat")
        if self._unobserve is None:
            self._unobserve = metrics.observe(self)

    async def stop(self, grace: float = 5.0) -> None:
        """Cancel every execution (each reports its end), then stop; bounded by `grace`
        so a dead NATS connection cannot hold the process: the orchestrator recovers
        unreported executions from the next hello (boot id) or the disconnect timeout."""
        self._stopping = True
        if self._unobserve is not None:
            self._unobserve()
            self._unobserve = None
        for sub in self._subs:
            await self.bus.unsubscribe(sub)
        self._subs = []
        tasks = [r.task for r in self._running.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        await self._children.stop()
        for engine in self.engines.values():
            await engine.close()

    @property
    def registered(self) -> bool:
        """Whether an orchestrator has answered this node's hello."""
        return self._hello_done.is_set()

    @property
    def running_count(self) -> int:
        return len(self._running)

    async def wait_registered(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            await self._hello_done.wait()

    # ---- registration and heartbeats -----------------------------------------------------------

    def info(self) -> wire.NodeInfo:
        return wire.NodeInfo(
            id=self.node_id,
            labels=node_labels(self.node_id, self.config.labels),
            engines=sorted(self.engines),
            publishers=sorted(self.publishers),
            sources=list(self.sources),
            capacity=self.capacity,
            version="0.1.0",
            network=self.config.network,
        )

    async def _hello(self) -> None:
        hello = wire.Hello(
            node=self.info(),
            boot_id=self.boot_id,
            public_key=self.public_key,
            running=[
                wire.RunningExecution(id=i, job_id=r.execution.order.job_id)
                for i, r in self._running.items()
            ],
        )
        raw = await self.bus.request(
            subjects.node_hello(self.node_id), wire.encode(hello), timeout=5.0
        )
        reply = wire.decode(raw, wire.ApiReply, what="hello reply")
        if not reply.ok:
            raise InvalidSpec(reply.error.message if reply.error else "hello refused")
        answer = wire.decode(reply.data, wire.HelloReply, what="hello reply")
        self.approval = answer.approval
        self.heartbeat_interval = answer.heartbeat_interval or self.heartbeat_interval
        for exec_id in answer.cancel:
            self._cancel(exec_id, "the orchestrator no longer wants it")
        self._hello_done.set()

    async def _heartbeats(self) -> None:
        seq = 0
        hello_every = max(int(30 / self.heartbeat_interval), 1)
        while True:
            if not self._hello_done.is_set() or seq % hello_every == 0:
                try:
                    await self._hello()
                except ShoalError as exc:
                    log.info("%s: waiting for an orchestrator (%s)", self.node_id, exc)
                    await asyncio.sleep(min(self.heartbeat_interval, 1.0))
                    continue
            seq += 1
            beat = wire.Heartbeat(
                node_id=self.node_id,
                seq=seq,
                free=self.free(),
                running=list(self._running),
                boot_id=self.boot_id,
                sent_at=time.time(),
            )
            try:
                await self.bus.publish(subjects.node_heartbeat(self.node_id), wire.encode(beat))
            except ShoalError as exc:
                log.debug("%s: heartbeat not sent: %s", self.node_id, exc)
            await asyncio.sleep(self.heartbeat_interval)

    def free(self) -> wire.Capacity:
        return self.capacity.minus(self._used)

    # ---- bids and commands ---------------------------------------------------------------------

    def _spec(self, order: wire.ExecutionOrder) -> JobSpec:
        key = (order.job_id, order.job_version)
        spec = self._specs.get(key)
        if spec is None:
            if len(self._specs) > 1000:
                self._specs.clear()
            spec = self._specs[key] = spec_from_canonical(bytes(order.spec))
        return spec

    def refusal(self, spec: JobSpec) -> str | None:
        """Local policy (compute/bidding.py) on this node's standing now: why it declines."""
        return refusal(
            spec,
            approval=self.approval,
            engines=self.engines,
            publishers=self.publishers,
            sources=self.sources,
            network=self.config.network,
            allow_local_paths=self.config.allow_local_paths,
            free=self.free(),
            running=len(self._running),
        )

    async def on_bid(self, msg: Message) -> None:
        try:
            order = wire.decode(msg.data, wire.ExecutionOrder, what="bid")
            trace.mark("agent.bid", order.job_id)
            spec = self._spec(order)
        except ShoalError as exc:
            await self.bus.respond(msg, wire.encode(wire.BidReply(accepted=False, reason=str(exc))))
            return
        known = order.execution_id in self._running or order.execution_id in self._finished
        reason = None if known else self.refusal(spec)
        if self._stopping and not known:
            reason = "this node is shutting down"
        if reason is None and not known:
            engine = self.engines.get(spec.task.engine.type)
            reason = await image_refusal(spec, engine, pulls=self.config.image_pull != "never")
        secrets: dict[str, str] = {}
        if reason is None and not known:
            try:
                secrets = self._open(order, spec)
            except ShoalError as exc:  # names the variable and the secret, never a value
                reason = str(exc)
        if reason is None and not known:
            self._launch(order, spec, secrets)
            trace.mark("agent.launched", order.job_id)
        busy = reason in (BUSY_RESOURCES, BUSY_SLOTS)
        reply = wire.BidReply(accepted=reason is None, reason=reason or "", busy=busy)
        await self.bus.respond(msg, wire.encode(reply))

    def _publisher_for(self, spec: JobSpec) -> Publisher | None:
        """The task's publisher. With none named and no ResultPaths there is nothing beyond
        stdout/stderr, which the log stream already keeps: skip the archive altogether."""
        task = spec.task
        if not task.publisher.type and not task.result_paths:
            return None
        return self.publishers.get(task.publisher.type or "nats")

    async def on_command(self, msg: Message) -> None:
        try:
            command = wire.decode_command(msg.data)
        except ShoalError as exc:
            await self.bus.respond(msg, wire.encode(wire.CommandAck(ok=False, message=str(exc))))
            return
        if isinstance(command, wire.CancelCommand):
            self._cancel(command.execution_id, command.reason or "cancelled")
        else:
            try:
                spec = self._spec(command.order)
                secrets = self._open(command.order, spec)
            except ShoalError as exc:
                await self.bus.respond(
                    msg, wire.encode(wire.CommandAck(ok=False, message=str(exc)))
                )
                return
            if command.order.execution_id not in self._running:
                self._launch(command.order, spec, secrets)
        await self.bus.respond(msg, wire.encode(wire.CommandAck(ok=True)))

    def _cancel(self, execution_id: str, reason: str) -> None:
        running = self._running.get(execution_id)
        if running is not None and not running.task.done():
            running.execution.cancel_reason = reason
            running.task.cancel()

    def _open(self, order: wire.ExecutionOrder, spec: JobSpec) -> dict[str, str]:
        """The secrets of the task's Env, opened from the order's boxes sealed for this node."""
        if self._key is None:
            raise ShoalError(f"{self.node_id} has no key to open secrets with (not started)")
        return open_secrets(order, spec, self._key, self.node_id)

    def _launch(
        self, order: wire.ExecutionOrder, spec: JobSpec, secrets: dict[str, str] | None = None
    ) -> None:
        if order.execution_id in self._finished:
            return  # a resent offer for something that already ran here
        demand = wire.Capacity.of(spec.task.resources)
        execution = Execution(order, spec, secrets=secrets or {})
        task = self._children.spawn(self._execute(execution), name=order.execution_id)
        self._running[order.execution_id] = _Running(execution, task, demand)
        self._used = self._used.plus(demand)

    async def _execute(self, execution: Execution) -> None:
        order = execution.order
        # One loop turn first: the bid's reply, queued just after this task was created, then
        # leaves before the task runs. A short task would otherwise end before the reply is
        # written, holding back the planner's record of the offer and, behind it, the next
        # evaluation of the job (the one that sees the task's outcome).
        await asyncio.sleep(0)
        try:
            await run_execution(
                execution,
                node_id=self.node_id,
                engine=self.engines[execution.spec.task.engine.type],
                workdir=self.config.state_dir / "executions" / order.execution_id,
                allowed=self.config.allow_local_paths,
                report=self._report,
                publisher=self._publisher_for(execution.spec),
                ship_logs=lambda path, stream: LogShipper(
                    self.bus,
                    path,
                    order.job_id,
                    order.execution_id,
                    stream,
                    namespace=order.namespace,
                    node_id=self.node_id,
                    limit=self.config.log_limit,
                ),
            )
        except asyncio.CancelledError:
            pass  # reported by run_execution; the agent itself keeps going
        except Exception as exc:  # a bug in one execution must not take the agent down
            log.exception("%s: execution %s crashed", self.node_id, order.execution_id)
            await self._report(
                wire.ExecutionUpdate(
                    execution_id=order.execution_id,
                    job_id=order.job_id,
                    node_id=self.node_id,
                    state="failed",
                    error=f"internal error on {self.node_id}: {exc}",
                    retryable=True,
                    at=time.time(),
                )
            )
        finally:
            self._release(order.execution_id)

    def _release(self, execution_id: str) -> None:
        """The execution no longer holds its room here (idempotent)."""
        ended = self._running.pop(execution_id, None)
        if ended is not None:
            self._used = self._used.minus(ended.demand)
        if execution_id not in self._finished:
            self._finished[execution_id] = time.time()
            if len(self._finished) > 10_000:
                cutoff = sorted(self._finished.values())[5_000]
                self._finished = {k: v for k, v in self._finished.items() if v > cutoff}

    async def on_results(self, msg: Message) -> None:
        """Serve a chunk of a result archive kept by the local publisher."""
        try:
            req = wire.decode(msg.data, wire.ResultChunkRequest, what="results request")
            path = self.local_results.path_of(req.execution_id)
            with path.open("rb") as f:
                f.seek(max(req.offset, 0))
                data = f.read(min(max(req.size, 1), 512 * 1024))
            reply = wire.ApiReply(ok=True, data=msgspec.Raw(wire.encode(data)))
        except (ShoalError, ValueError) as exc:
            reply = wire.ApiReply(ok=False, error=wire.ApiError(code="invalid", message=str(exc)))
        except FileNotFoundError:
            reply = wire.ApiReply(
                ok=False,
                error=wire.ApiError(
                    code="not_found",
                    message=f"no local results on {self.node_id} for that execution",
                ),
            )
        await self.bus.respond(msg, wire.encode(reply))

    async def _report(self, update: wire.ExecutionUpdate) -> None:
        """Durable and deduplicated (compute/reporting.py).

        An execution's room is given back before its end is reported: the orchestrator
        offers that room to a waiting job as soon as it applies the report, and the offer
        could otherwise reach this node before the room is free here."""
        if update.state in wire.TERMINAL_COMPUTE_STATES:
            self._release(update.execution_id)
        await store_update(self.bus, self.node_id, update, stopping=lambda: self._stopping)
