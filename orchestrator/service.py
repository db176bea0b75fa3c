"""The orchestrator process: wires state, registry, API, planner and broker, and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass

from orchestrator.api import Api
from orchestrator.buckets import Buckets
from orchestrator.evals import EvalBroker
from orchestrator.history import History
from orchestrator.leader import Lease
from orchestrator.planner import Planner, scoped
from orchestrator.registry import NodeRegistry
from orchestrator.scheduler import Stop
from orchestrator.state import StateMirror
from orchestrator.updates import UpdateApplier
from shared import subjects, wire
from shared.bus import Bus
from shared.errors import ShoalError
from shared.lifecycle import Service, Supervisor
from shared.spec import JobSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    heartbeat_interval: float = 1.0
    disconnect_timeout: float = 5.0
    manual_approval: bool = False
    max_attempts: int = 3
    bid_timeout: float = 5.0
    # Evaluations wait on the network (a bid's answer, a write's ack), not on this CPU: with
    # 8 at once, 2,000 jobs submitted together completed at 480 jobs/s, with 32 at 610.
    workers: int = 32
    lease_ttl: float = 5.0
    # How long stop() waits for the API requests (and then the node hellos) it has taken.
    drain_timeout: float = 5.0
    name: str = ""
    events_max_age: float = 30 * 24 * 3600.0


async def ensure_streams(bus: Bus, config: OrchestratorConfig) -> None:
    """Create (or update) every stream; idempotent, any orchestrator may run it."""
    await bus.ensure_stream(
        subjects.EVENTS_STREAM, [subjects.EVENTS_SUBJECTS], max_age=config.events_max_age
    )
    await bus.ensure_stream(
        subjects.LOGS_STREAM,
        [subjects.LOGS_SUBJECTS],
        max_bytes=None,
        max_age=config.events_max_age,
    )
    await bus.ensure_stream(subjects.UPDATES_STREAM, [subjects.UPDATES_SUBJECTS], work_queue=True)
    await bus.ensure_stream(subjects.EVALS_STREAM, [subjects.EVALS_SUBJECTS], work_queue=True)
    await bus.object_store(subjects.RESULTS_STORE)


class Orchestrator(Service):
    """start() / stop() / `async with`; schedules and serves the API on one NATS connection."""

    def __init__(
        self,
        bus: Bus,
        config: OrchestratorConfig | None = None,
        *,
        buckets: Buckets | None = None,
    ) -> None:
        """`buckets`: where the state mirror opens its KV buckets (by default the bus; tests
        hand it doubles)."""
        self.config = config or OrchestratorConfig()
        self.bus = bus
        self.mirror = StateMirror(buckets or bus)
        self.history = History(bus)
        self.registry = NodeRegistry(
            bus,
            self.mirror,
            heartbeat_interval=self.config.heartbeat_interval,
            disconnect_timeout=self.config.disconnect_timeout,
            manual_approval=self.config.manual_approval,
            on_node_ready=self._node_changed,
            on_node_lost=self._node_lost,
            on_stale=self._stale,
            on_room=self._trigger_room_waiting,
            leading=lambda: self.leading,
        )
        self.broker = EvalBroker(bus, self._evaluate, workers=self.config.workers)
        self.planner = Planner(
            bus,
            self.mirror,
            self.registry,
            self.history,
            later=self.broker.later,
            bid_timeout=self.config.bid_timeout,
            final_view=lambda job: wire.encode(self.api.view(job, with_spec=True)),
        )
        self.api = Api(
            bus,
            self.mirror,
            self.registry,
            self.history,
            max_attempts=self.config.max_attempts,
            submitted=self._submitted,
        )
        self.updates = UpdateApplier(
            bus,
            self.mirror,
            self.history,
            on_applied=self._execution_changed,
            cancel=self.planner.cancel_on_node,
        )
        self.name = self.config.name or f"orchestrator-{uuid.uuid4().hex[:8]}"
        self.lease = Lease(bus, self.name, ttl=self.config.lease_ttl)
        self._children = Supervisor("orchestrator")
        self._leading = Supervisor("scheduling")
        self._started = False

    @property
    def leading(self) -> bool:
        """Whether this orchestrator currently holds the scheduling lease."""
        return self._leading.running

    async def start(self) -> None:
        """Serve the API at once; schedule whenever this orchestrator holds the lease."""
        if self._started:
            return
        self._started = True
        await ensure_streams(self.bus, self.config)
        await self.mirror.start()
        await self._children.start()
        await self.registry.start()
        await self.api.start()
        first = asyncio.Event()

        async def lead() -> None:
            await self._lead()
            first.set()

        async def follow() -> None:
            await self._leading.stop()
            self._leading = Supervisor("scheduling")

        self._children.spawn(
            self.lease.run(lead, follow, healthy=lambda: self._leading.running),
            name="leader-election",
        )
        # A lone orchestrator should be scheduling by the time start() returns.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.lease_ttl / 2):
                await first.wait()
        log.info(
            "%s started (%s): %d jobs, %d nodes known",
            self.name,
            "leader" if self.leading else "follower",
            len(self.mirror.jobs),
            len(self.mirror.nodes),
        )

    async def _lead(self) -> None:
        await self._leading.start()
        self.registry.reset_liveness()
        self._leading.spawn(self.registry.sweep_forever(), name="liveness")
        self._leading.spawn(self.broker.run_timers(), name="eval-timers")
        self._leading.spawn(self.broker.run_consumer(), name="eval-queue")
        for i in range(self.config.workers):
            self._leading.spawn(self.broker.run_worker(), name=f"eval-worker-{i}")
        self._leading.spawn(self.updates.run(), name="updates")
        self._leading.spawn(self._rescue_forever(), name="rescue")
        # A new leader owes every unfinished job an evaluation: triggers and timers of the
        # previous one died with it.
        for versioned in list(self.mirror.jobs.values()):
            job = versioned.value
            if job.state not in wire.TERMINAL_JOB_STATES:
                self.broker.trigger(job.id, job.priority)

    async def _rescue_forever(self, every: float = 10.0) -> None:
        """A job stored but never evaluated (its evaluation was lost, e.g. NATS failed over
        between the two writes) is picked up here instead of staying Pending forever. So is,
        harmlessly, one whose tasks take longer than that to start."""
        while True:
            await asyncio.sleep(every)
            now = time.time()
            for versioned in list(self.mirror.jobs.values()):
                job = versioned.value
                if job.state == "Pending" and now - job.updated_at > every:
                    self.broker.trigger(job.id, job.priority)

    async def stop(self) -> None:
        """Idempotent; safe before start. Answers the API requests and node hellos it has
        taken (and takes no more), then hands the lease over rather than letting it expire."""
        await self.api.drain(self.config.drain_timeout)
        await self.registry.drain(self.config.drain_timeout)
        await self._leading.stop()
        await self._children.stop()
        with contextlib.suppress(ShoalError):
            await self.lease.release()
        await self.mirror.stop()

    # ---- triggers ----------------------------------------------------------------------------

    def _submitted(self, job: wire.JobRecord, spec: JobSpec) -> bool:
        """Evaluate in-process when leading; False: the API queues it for the leader."""
        if not self.leading:
            return False
        self.planner.remember(job, spec)
        self.broker.trigger(job.id, job.priority)
        return True

    async def _evaluate(self, job_id: str, nodes: frozenset[str] | None) -> None:
        await self.planner.evaluate(job_id, nodes)

    def _trigger_waiting(self, node_id: str) -> None:
        """Jobs that may now fit on `node_id`: queued ones, and daemons (which go everywhere;
        only that node's copy of a daemon needs a look)."""
        for job_id in list(self.mirror.seeking_nodes):
            job = self.mirror.job(job_id)
            if job is not None:
                nodes = (node_id,) if job.type == "daemon" else None
                self.broker.trigger(job.id, job.priority, nodes)

    def _trigger_room_waiting(self, node_id: str) -> None:
        """A heartbeat shows more room on `node_id`: the jobs that wait for room may fit
        (daemons wait for nodes, not room: they are not evaluated again for this)."""
        for job_id in list(self.mirror.waiting_for_room):
            job = self.mirror.job(job_id)
            if job is not None:
                self.broker.trigger(job.id, job.priority)

    def _jobs_on(self, node_id: str) -> set[str]:
        return {e.job_id for e in self.mirror.live_on(node_id)}

    def _node_changed(self, node_id: str) -> None:
        self._trigger_waiting(node_id)
        for job_id in self._jobs_on(node_id):
            job = self.mirror.job(job_id)
            self.broker.trigger(job_id, 0, (node_id,) if job and job.type == "daemon" else None)

    def _node_lost(self, node_id: str) -> None:
        for job_id in self._jobs_on(node_id):
            self.broker.trigger(job_id)

    def _stale(self, node_id: str, execution_ids: list[str]) -> None:
        """A node runs executions we no longer want, or lost ones we thought it ran."""
        for exec_id in execution_ids:
            known = self.mirror.executions.get(exec_id)
            if (
                known is not None
                and known.value.live
                and known.value.node_id == node_id
                and known.value.desired_state == "running"
            ):
                self._children.spawn(self._mark_lost(known.value))
            else:
                self._children.spawn(
                    self.planner.cancel_on_node(node_id, exec_id, "not wanted here")
                )

    async def _mark_lost(self, record: wire.ExecutionRecord) -> None:
        stop = Stop(record.id, "lost", f"node {record.node_id} restarted without it")
        try:
            await self.planner.stop_execution(stop, time.time())
        except ShoalError as exc:
            log.warning("marking %s lost: %s", record.id, exc)
        self.broker.trigger(record.job_id)

    def _execution_changed(self, record: wire.ExecutionRecord) -> None:
        job = self.mirror.job(record.job_id)
        priority = job.priority if job else 0
        if record.compute_state in wire.TERMINAL_COMPUTE_STATES:
            self.registry.release(record.node_id, record.id)
            # A daemon's copy ended: its restart is that node's business (not a rollout's).
            nodes = self._only_its_node(job, record) if job is not None else None
            self.broker.trigger(record.job_id, priority, nodes)
            self._trigger_waiting(record.node_id)  # capacity freed up there
        elif (
            record.compute_state == "running"
            and job is not None
            and (job.type in ("daemon", "service") or job.state != "Running")
        ):
            # A replacement came up (rolling update, drain) or the job starts running. A
            # daemon's copy coming up on a node without an older one concerns that node only.
            self.broker.trigger(record.job_id, priority, self._only_its_node(job, record))

    def _only_its_node(
        self, job: wire.JobRecord, record: wire.ExecutionRecord
    ) -> tuple[str] | None:
        if not scoped(job) or any(
            e.job_id == job.id and e.job_version != record.job_version
            for e in self.mirror.live_on(record.node_id)
        ):
            return None
        return (record.node_id,)
