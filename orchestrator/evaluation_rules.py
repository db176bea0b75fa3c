"""What makes a job get evaluated: one method per event, each naming the jobs the broker evaluates.

An evaluation may be scoped to nodes: a running daemon job (`planner.scoped`), whose copy on a
node is that node's business alone, is evaluated for that node only when the node joins or
changes, when an execution there ends (freeing room), or when a copy there comes up or ends
beside no other version of the job. Every other event, and every other job, is evaluated whole.

Not here, because they are mechanisms rather than rules: the broker's durable queue
(SHOAL_EVALS: a follower's submit, a stop, a new version: `EvalBroker.run_consumer`) and its
timers, which the planner arms (`EvalBroker.later`: backoffs, timeouts, refused bids).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from orchestrator import metrics
from orchestrator.evals import EvalBroker
from orchestrator.planner import Planner, scoped
from orchestrator.plans import Stop
from orchestrator.registry import NodeRegistry
from orchestrator.state import StateMirror
from shared import wire
from shared.errors import ShoalError
from shared.spec import JobSpec

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], object]


class EvaluationRules:
    """Maps what happened (to the leader, a job, a node, an execution) to evaluations.

    Meets `NodeEvents` (liveness.py) and `ExecutionEvents` (updates.py); the API calls
    `submitted`, the orchestrator `became_leader` and `rescue`."""

    def __init__(
        self,
        mirror: StateMirror,
        broker: EvalBroker,
        planner: Planner,
        registry: NodeRegistry,
        *,
        leading: Callable[[], bool],
        spawn: Spawn,
    ) -> None:
        self._mirror = mirror
        self._broker = broker
        self._planner = planner
        self._registry = registry
        self._leading = leading
        self._spawn = spawn  # for the writes a stray needs, which outlive the heartbeat
        broker.on_queued = self.queued

    # ---- the leader and the API ----------------------------------------------------------------

    def became_leader(self) -> None:
        """A new leader owes every unfinished job an evaluation: the triggers and timers of
        the previous one died with it."""
        for versioned in list(self._mirror.jobs.values()):
            job = versioned.value
            if job.state not in wire.TERMINAL_JOB_STATES:
                self._broker.trigger(job.id, job.priority)

    def rescue(self, now: float, after: float) -> None:
        """A job stored but left `Pending` for `after` seconds (its evaluation was lost, e.g.
        NATS failed over between the two writes) is evaluated instead of staying Pending
        forever. So is, harmlessly, one whose tasks take longer than that to start."""
        for versioned in list(self._mirror.jobs.values()):
            job = versioned.value
            if job.state == "Pending" and now - job.updated_at > after:
                self._broker.trigger(job.id, job.priority)

    def submitted(self, job: wire.JobRecord, spec: JobSpec) -> bool:
        """Evaluate in-process when leading; False: the API queues it for the leader."""
        if not self._leading():
            return False
        metrics.submitted(job)
        self._planner.remember(job, spec)
        self._broker.trigger(job.id, job.priority)
        return True

    def queued(self, ev: wire.Evaluation) -> None:
        """An evaluation from the durable queue: a submission served by another orchestrator
        (or before this one led), a new version, or a stop (any orchestrator's API stops a job
        this way). Counted here, by the leader, so that each is counted once in the cluster."""
        if ev.trigger in ("submitted", "updated", "stopped"):
            job = self._mirror.job(ev.job_id)
            kind = job.type if job is not None else "other"
            if ev.trigger == "stopped" and job is not None:
                metrics.ended(job, "Stopped")
            elif ev.trigger == "stopped":
                metrics.JOBS_STOPPED.labels(type="other").inc()
            else:
                metrics.submitted_type(kind)

    # ---- nodes (NodeEvents) --------------------------------------------------------------------

    def node_ready(self, node_id: str) -> None:
        """The jobs that may now fit on the node, and the jobs running there."""
        self._seeking_nodes(node_id)
        for job_id in self._jobs_on(node_id):
            job = self._mirror.job(job_id)
            self._broker.trigger(job_id, 0, (node_id,) if job and job.type == "daemon" else None)

    def node_lost(self, node_id: str) -> None:
        """The jobs running there: their executions there are lost."""
        for job_id in self._jobs_on(node_id):
            self._broker.trigger(job_id)

    def room_freed(self, node_id: str) -> None:
        """The jobs that wait for room may fit now (daemons wait for nodes, not room: they
        are not evaluated again for this)."""
        for job_id in list(self._mirror.waiting_for_room):
            job = self._mirror.job(job_id)
            if job is not None:
                self._broker.trigger(job.id, job.priority)

    def strays(self, node_id: str, execution_ids: list[str], why: str) -> None:
        """An execution the node should run and does not is marked lost (`why`), and its job
        evaluated; one it runs and should not is cancelled there."""
        for exec_id in execution_ids:
            known = self._mirror.executions.get(exec_id)
            if (
                known is not None
                and known.value.live
                and known.value.node_id == node_id
                and known.value.desired_state == "running"
            ):
                self._spawn(self._mark_lost(known.value, why))
            else:
                self._spawn(self._planner.cancel_on_node(node_id, exec_id, "not wanted here"))

    async def _mark_lost(self, record: wire.ExecutionRecord, why: str) -> None:
        stop = Stop(record.id, "lost", why)
        try:
            await self._planner.stop_execution(stop, time.time())
        except ShoalError as exc:
            log.warning("marking %s lost: %s", record.id, exc)
        self._broker.trigger(record.job_id)

    # ---- executions (ExecutionEvents) ----------------------------------------------------------

    def execution_changed(self, record: wire.ExecutionRecord) -> None:
        """An execution ended: its job, and the jobs that may fit in the room it freed. One
        came up: its job, if that may change the job (a rolling update's or a drain's
        replacement, or the job's first task to start)."""
        job = self._mirror.job(record.job_id)
        priority = job.priority if job else 0
        if record.compute_state in wire.TERMINAL_COMPUTE_STATES:
            self._registry.release(record.node_id, record.id)
            # A daemon's copy ended: its restart is that node's business (not a rollout's).
            nodes = self._only_its_node(job, record) if job is not None else None
            self._broker.trigger(record.job_id, priority, nodes)
            self._seeking_nodes(record.node_id)  # room freed up there
        elif (
            record.compute_state == "running"
            and job is not None
            and (job.type in ("daemon", "service") or job.state != "Running")
        ):
            self._broker.trigger(record.job_id, priority, self._only_its_node(job, record))

    # ---- helpers -------------------------------------------------------------------------------

    def _seeking_nodes(self, node_id: str) -> None:
        """Jobs that may now fit on `node_id`: those waiting for room, and daemons (which go
        everywhere; only that node's copy of a daemon needs a look)."""
        for job_id in list(self._mirror.seeking_nodes):
            job = self._mirror.job(job_id)
            if job is not None:
                nodes = (node_id,) if job.type == "daemon" else None
                self._broker.trigger(job.id, job.priority, nodes)

    def _jobs_on(self, node_id: str) -> set[str]:
        return {e.job_id for e in self._mirror.live_on(node_id)}

    def _only_its_node(
        self, job: wire.JobRecord, record: wire.ExecutionRecord
    ) -> tuple[str] | None:
        """The node of `record` alone, if the job is evaluated by node and has no other
        version live there (a rollout's business); None: the whole job."""
        if not scoped(job) or any(
            e.job_id == job.id and e.job_version != record.job_version
            for e in self._mirror.live_on(record.node_id)
        ):
            return None
        return (record.node_id,)
