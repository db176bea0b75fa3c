"""The orchestrator process: wires state, registry, API, planner, broker and evaluation rules.

What each event makes the orchestrator evaluate is in `evaluation_rules.py`; this module builds
the parts, connects them, and starts and stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from orchestrator import metrics
from orchestrator.api import MAX_COUNT, Api
from orchestrator.buckets import Buckets
from orchestrator.evals import EvalBroker
from orchestrator.evaluation_rules import EvaluationRules
from orchestrator.history import History
from orchestrator.leader import Lease
from orchestrator.planner import Planner
from orchestrator.registry import NodeRegistry
from orchestrator.result_limits import limit_result_stores_forever
from orchestrator.retention import Retention
from orchestrator.secrets import Secrets
from orchestrator.settling import Settler
from orchestrator.state import StateMirror
from orchestrator.updates import UpdateApplier
from shared import subjects, wire
from shared.bus import Bus
from shared.errors import ShoalError
from shared.lifecycle import Service, Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    heartbeat_interval: float = 1.0
    disconnect_timeout: float = 5.0
    manual_approval: bool = False
    max_attempts: int = 3
    # A job's Count above this is refused at submit (job.submit's `invalid`, path Count).
    max_count: int = MAX_COUNT
    bid_timeout: float = 5.0
    # Evaluations wait on the network (a bid's answer, a write's ack), not on this CPU, so
    # many more of them at once than cores keep the throughput up.
    workers: int = 32
    lease_ttl: float = 5.0
    # How long stop() waits for the API requests (and then the node hellos) it has taken.
    drain_timeout: float = 5.0
    name: str = ""
    events_max_age: float = 30 * 24 * 3600.0
    # A node DISCONNECTED this long is removed by the leader's liveness sweep (0: never),
    # as Nomad collects down nodes after 24 h; one that comes back registers again.
    node_gc_after: float = 24 * 3600.0
    # The master key secrets are encrypted under (32 random bytes, base64), made (mode 0600)
    # if missing; the same file on every orchestrator. None: secrets cannot be created.
    secrets_key: Path | None = None
    # A job that ended (Completed, Failed, Stopped; not a daemon or service job) is purged with
    # its executions, versions, history, logs and results this long after (0: kept forever),
    # at most `purge_batch` jobs a sweep (orchestrator/retention.py).
    job_retention: float = 7 * 24 * 3600.0
    purge_batch: int = 100
    # Storage that fills up: past these sizes the oldest go first, never a refused write. The
    # logs stream (SHOAL_LOGS: oldest lines), and each namespace's results object store
    # (`shoal-results-ns-<ns>`: oldest archives; checked every `storage_check_every` s by the
    # leader, as results create a namespace's bucket). None: no limit.
    logs_max_bytes: int | None = 1 << 30
    results_max_bytes: int | None = 1 << 30
    storage_check_every: float = 5.0


async def ensure_streams(bus: Bus, config: OrchestratorConfig) -> None:
    """Create (or update) every stream; idempotent, any orchestrator may run it."""
    await bus.ensure_stream(
        subjects.EVENTS_STREAM, [subjects.EVENTS_SUBJECTS], max_age=config.events_max_age
    )
    await bus.ensure_stream(
        subjects.LOGS_STREAM,
        [subjects.LOGS_SUBJECTS],
        max_bytes=config.logs_max_bytes,
        max_age=config.events_max_age,
    )
    await bus.ensure_stream(subjects.UPDATES_STREAM, [subjects.UPDATES_SUBJECTS], work_queue=True)
    await bus.ensure_stream(subjects.EVALS_STREAM, [subjects.EVALS_SUBJECTS], work_queue=True)


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
            leading=lambda: self.leading,
            gc_after=self.config.node_gc_after,
        )
        self.broker = EvalBroker(bus, self._evaluate, workers=self.config.workers)
        self.secrets = Secrets(bus, self.config.secrets_key)
        self.planner = Planner(
            bus,
            self.mirror,
            self.registry,
            self.history,
            later=self.broker.later,
            bid_timeout=self.config.bid_timeout,
            final_view=lambda job: wire.encode(self.api.view(job, with_spec=True)),
            secrets=self.secrets,
        )
        self._children = Supervisor("orchestrator")
        self.rules = EvaluationRules(
            self.mirror,
            self.broker,
            self.planner,
            self.registry,
            leading=lambda: self.leading,
            spawn=self._children.spawn,
        )
        self.registry.events = self.rules
        self.retention = Retention(
            bus,
            self.mirror,
            retention=self.config.job_retention,
            batch=self.config.purge_batch,
            purged=metrics.purged,
            compact=self._compact,
        )
        self.settler = Settler(self.mirror)
        self.api = Api(
            bus,
            self.mirror,
            self.registry,
            self.history,
            max_attempts=self.config.max_attempts,
            max_count=self.config.max_count,
            submitted=self.rules.submitted,
            purge=self.retention.purge,
        )
        self.updates = UpdateApplier(
            bus,
            self.mirror,
            self.history,
            events=self.rules,
            cancel=self.planner.cancel_on_node,
        )
        self.name = self.config.name or f"orchestrator-{uuid.uuid4().hex[:8]}"
        self.lease = Lease(bus, self.name, ttl=self.config.lease_ttl)
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
        await self.secrets.start()
        await self.api.start()
        self._children.spawn(self.retention.clean_forever(), name="purged-markers")
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
        self._leading.spawn(self.broker.run_workers(), name="eval-workers")
        self._leading.spawn(self.updates.run(), name="updates")
        self._leading.spawn(self._rescue_forever(), name="rescue")
        self._leading.spawn(self.retention.sweep_forever(), name="retention")
        self._leading.spawn(self.settler.settle_forever(), name="settling")
        self._leading.spawn(
            limit_result_stores_forever(
                self.bus, self.config.results_max_bytes, self.config.storage_check_every
            ),
            name="results-limits",
        )
        self.rules.became_leader()

    def _compact(self) -> None:
        """After the last purge of a burst: what held its jobs, rebuilt at its present size."""
        self.mirror.compact()
        self.broker.compact()
        self.registry.compact()
        self.updates.compact()

    async def _rescue_forever(self, every: float = 10.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.rules.rescue(time.time(), after=every)

    async def stop(self) -> None:
        """Idempotent; safe before start. Answers the API requests and node hellos it has
        taken (and takes no more), then hands the lease over rather than letting it expire."""
        await self.api.drain(self.config.drain_timeout)
        await self.secrets.stop(self.config.drain_timeout)
        await self.registry.drain(self.config.drain_timeout)
        await self._leading.stop()
        await self._children.stop()
        await self.retention.stop()
        with contextlib.suppress(ShoalError):
            await self.lease.release()
        await self.mirror.stop()

    async def _evaluate(self, job_id: str, nodes: frozenset[str] | None) -> None:
        # The broker is made before the planner (which arms the broker's timers).
        await self.planner.evaluate(job_id, nodes)
