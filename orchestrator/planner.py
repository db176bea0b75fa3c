"""The planner: runs a scheduler over the mirror's state and carries out its plan.

Carrying out means: CAS-write stopped executions and tell their nodes, create offered
executions and ask their nodes to bid, CAS-write the job's new state, append history, and arm
a timer for the next evaluation. A refused bid or a lost CAS re-plans (a few rounds at most).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Literal, TypeVar, cast

import msgspec

from orchestrator import metrics
from orchestrator.history import History
from orchestrator.registry import NodeRegistry
from orchestrator.scheduler import Context, Placement, Plan, Stop, ran, schedule
from orchestrator.secrets import NO_PUBLIC_KEY, Secrets, seal_env, secrets_for
from orchestrator.spec_cache import SpecCache
from orchestrator.state import StateMirror
from shared import subjects, trace, wire
from shared.bus import Bus
from shared.errors import Conflict, NoResponders, ShoalError
from shared.sealing import secret_refs
from shared.spec import JobSpec

log = logging.getLogger(__name__)

REFUSAL_MEMORY = 5.0
NOBODY_LISTENING = "nobody took the bid"
NO_ANSWER = "no answer to the bid"
# Evaluate (job) again at (time), for (nodes) of it only, or all of it (None): EvalBroker.later
Later = Callable[[str, float, int, frozenset[str] | None], None]
PLAN_CONCURRENCY = 128  # a plan's offers (or stops) in flight at once
T = TypeVar("T")
R = TypeVar("R")
MAX_ROUNDS = 4
# What became of an offer: the node took it, declined it, or the planner withdrew it (the job
# it was made for is not the one stored; re-planned without holding it against the node).
Offered = Literal["taken", "declined", "withdrawn"]


async def _bounded(items: Sequence[T], work: Callable[[T], Awaitable[R]]) -> list[R]:
    """`work` on every item, at most PLAN_CONCURRENCY at once; the results in order, or the
    first error once every item is done. A daemon job on 10,000 nodes was 10,000 offers sent
    at once: the answers to everything else (API requests included) queued behind them for
    longer than their 5 s timeout."""
    results: list[R | BaseException | None] = [None] * len(items)
    pending = iter(range(len(items)))

    async def worker() -> None:
        for i in pending:
            try:
                results[i] = await work(items[i])
            except Exception as exc:  # raised below, once the others are done
                results[i] = exc
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this evaluation is being cancelled: stop here
                results[i] = exc  # one item's own (nats-py can raise it): raised below

    async with asyncio.TaskGroup() as workers:
        for _ in range(min(PLAN_CONCURRENCY, len(items))):
            workers.create_task(worker())
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[R], results)


def _refusal(reply: wire.BidReply) -> metrics.PlacementFailure:
    """The bounded reason a bid was not taken, for shoal_placement_failures_total."""
    if reply.reason.startswith(NOBODY_LISTENING):
        return "not_listening"
    if reply.reason.startswith(NO_ANSWER):
        return "no_answer"
    return "busy" if reply.busy else "declined"


def scoped(job: wire.JobRecord) -> bool:
    """Whether an evaluation of `job` may look only at the nodes that changed: a running
    daemon job with nothing to say about itself, whose copies are each one node's business.
    Every other job, and a daemon that still waits for its first node, is evaluated whole."""
    return job.type == "daemon" and job.state == "Running" and not job.state_message


class Planner:
    def __init__(
        self,
        bus: Bus,
        mirror: StateMirror,
        registry: NodeRegistry,
        history: History,
        *,
        later: Later,
        bid_timeout: float = 5.0,
        final_view: Callable[[wire.JobRecord], bytes] = lambda job: b"",
        secrets: Secrets | None = None,
    ) -> None:
        self._bus = bus
        self._mirror = mirror
        self._registry = registry
        self._history = history
        self._later = later
        self.bid_timeout = bid_timeout
        self._final_view = final_view
        self._secrets = secrets
        self._specs = SpecCache()

    def remember(self, job: wire.JobRecord, spec: JobSpec) -> None:
        """The API validated this spec a moment ago: no need to parse it again."""
        self._specs.remember(job, spec)

    def spec_of(self, job: wire.JobRecord) -> JobSpec:
        return self._specs.spec_of(job)

    async def evaluate(self, job_id: str, nodes: frozenset[str] | None = None) -> None:
        """Plan the job and carry the plan out. `nodes`: only these nodes' part of it changed
        (see `scoped`)."""
        trace.mark("planner.evaluating", job_id)
        refused: dict[int, set[str]] = {}
        stopped_scoped = False
        try:
            for _ in range(MAX_ROUNDS):
                job = self._mirror.job(job_id)
                if job is None:
                    return
                now = time.time()
                only = nodes if nodes is not None and scoped(job) else None
                executions = self._mirror.executions_of(job_id, only)
                busy: set[str] = set()
                for e in executions:  # recently refused bids are not retried on the same node
                    if e.compute_state == "rejected" and now - e.updated_at < REFUSAL_MEMORY:
                        refused.setdefault(e.partition, set()).add(e.node_id)
                        if e.retryable:
                            busy.add(e.node_id)
                        self._later(job_id, e.updated_at + REFUSAL_MEMORY, 0, None)
                table = self._registry.states()
                ctx = Context(
                    job,
                    self.spec_of(job),
                    executions,
                    table if only is None else {n: table[n] for n in only if n in table},
                    now,
                    {p: frozenset(n) for p, n in refused.items()},
                    frozenset(busy),
                    scoped=only is not None,
                )
                plan = schedule(ctx)
                if plan.message.startswith("waiting for a node") or (
                    plan.state == "Failed" and "could not be placed" in plan.message
                ):
                    metrics.placement_failed("no_node_fits")
                stopped_scoped = stopped_scoped or (only is not None and bool(plan.stop))
                try:
                    declined = await self._apply(job, ctx.spec, plan, refused, only)
                except Conflict:
                    continue  # someone changed the job or an execution: re-read and re-decide
                if not declined:
                    return
        finally:
            if stopped_scoped:
                # A copy stopped, perhaps the job's last: whether it still runs anywhere is
                # for a whole evaluation to say (rare: a node stopped matching).
                self._later(job_id, time.time(), 0, None)

    async def _apply(
        self,
        job: wire.JobRecord,
        spec: JobSpec,
        plan: Plan,
        refused: dict[int, set[str]],
        only: frozenset[str] | None = None,
    ) -> bool:
        now = time.time()
        if len(plan.stop) == 1:
            await self.stop_execution(plan.stop[0], now)
        elif plan.stop:
            await _bounded(plan.stop, lambda stop: self.stop_execution(stop, now))
        declined = False
        values = await secrets_for(self._secrets, job.namespace, spec) if plan.place else {}
        if len(plan.place) == 1:  # the common case: no task to wrap the one offer in
            results = [await self._offer(job, spec, plan.place[0], values)]
        elif plan.place:
            results = await _bounded(plan.place, lambda p: self._offer(job, spec, p, values))
        else:
            results = []
        for placement, outcome in zip(plan.place, results, strict=True):
            if outcome != "taken":
                declined = True  # re-plan; a node that declined is not asked again
            if outcome == "declined":
                refused.setdefault(placement.partition, set()).add(placement.node_id)
        if declined:
            return True
        await self._set_job_state(job, plan, now)
        if plan.evaluate_at is not None:
            self._later(job.id, plan.evaluate_at, 0, only)  # a scoped plan's wake stays scoped
        return False

    async def stop_execution(self, stop: Stop, now: float) -> None:
        known = self._mirror.executions.get(stop.execution_id)
        if known is None or not known.value.live:
            return
        record = msgspec.structs.replace(
            known.value,
            desired_state="stopped",
            compute_state=stop.state,
            error=stop.reason,
            retryable=stop.state == "lost",
            updated_at=now,
        )
        await self._mirror.update_execution(record)
        self._registry.release(record.node_id, record.id)
        await self._history.execution(record, f"{stop.state}: {stop.reason}")
        if stop.state != "lost":
            await self.cancel_on_node(record.node_id, record.id, stop.reason)

    async def cancel_on_node(self, node_id: str, execution_id: str, reason: str) -> None:
        cmd = wire.CancelCommand(execution_id=execution_id, reason=reason)
        try:
            await self._bus.request(subjects.compute_cmd(node_id), wire.encode(cmd), timeout=2.0)
        except ShoalError as exc:  # the node's next heartbeat reconciles it
            log.debug("cancel %s on %s: %s", execution_id, node_id, exc)

    async def _offer(
        self,
        job: wire.JobRecord,
        spec: JobSpec,
        placement: Placement,
        values: Mapping[str, str] | str,
    ) -> Offered:
        """Create the execution as offered and ask the node at the same time (one round trip
        instead of two). A node that reports before the record's write is acked is held back
        (`InFlight.wait_execution_create`); if the write fails, the node is told to cancel and
        the error re-plans. `values`: the secrets to seal for the node, or why there are
        none (the execution is then created failed)."""
        # Stamped when sent, not when planned: a plan's offers go out a bounded number at a
        # time, and a large plan's last ones leave long after it began (a new leader judges
        # an offer left behind by its age).
        made = time.time()
        record = wire.ExecutionRecord(
            id=f"e-{uuid.uuid4()}",
            job_id=job.id,
            namespace=job.namespace,
            node_id=placement.node_id,
            job_version=job.version,
            partition=placement.partition,
            attempt=placement.attempt,
            created_at=made,
            updated_at=made,
        )
        if isinstance(values, str):
            return await self._unplaceable(job, record, values)
        sealed: list[wire.SealedEnv] = []
        refusal: wire.BidReply | None = None
        if values:
            public_key = self._registry.public_key(placement.node_id)
            if public_key:
                refs = secret_refs(spec.task.env)
                sealed = seal_env(values, refs, public_key, record.id, placement.node_id)
            else:  # declined for it, as its agent would (not asked: it cannot open them)
                refusal = wire.BidReply(accepted=False, reason=NO_PUBLIC_KEY)
        order = wire.ExecutionOrder(
            execution_id=record.id,
            job_id=job.id,
            job_type=job.type,
            namespace=job.namespace,
            job_version=job.version,
            partition=placement.partition,
            attempt=placement.attempt,
            spec=job.spec,
            secrets=sealed,
        )
        trace.mark("planner.offering", job.id)
        # The node's room is held from the offer on, not from its acceptance: evaluations of
        # other jobs running meanwhile (a queue woken by freed room) then see it taken rather
        # than all offering it to the same node, which would decline all but one.
        self._registry.reserve(placement.node_id, record.id, wire.Capacity.of(spec.task.resources))
        try:
            outcome = await self._offer_reserved(job, spec, placement, record, order, refusal)
        except BaseException:
            self._registry.release(placement.node_id, record.id)
            raise
        if outcome != "taken":
            self._registry.release(placement.node_id, record.id)
        return outcome

    async def _offer_reserved(
        self,
        job: wire.JobRecord,
        spec: JobSpec,
        placement: Placement,
        record: wire.ExecutionRecord,
        order: wire.ExecutionOrder,
        refusal: wire.BidReply | None = None,
    ) -> Offered:
        # The create in a task of its own, the bid in this one: the create registers itself
        # (`InFlight.creating_execution`) before the bid's bytes leave, so no report can
        # overtake it.
        creating = asyncio.ensure_future(self._mirror.create_execution(record))
        try:
            reply = refusal or await self._bid(placement.node_id, order)
        except BaseException:
            creating.cancel()
            raise
        created: Exception | None = None
        try:
            await creating
        except Exception as exc:  # told to the node below (cancel) and to the caller (raise)
            created = exc
        trace.mark("planner.offered", job.id)
        if not await self._mirror.in_flight.is_stored(job):
            # Offered while the job's own create was in flight, and that create failed (its
            # submit was answered with the error), or a new version replaced the job meanwhile:
            # withdraw the offer, and let the next evaluation decide on what is stored.
            gone = self._mirror.job(job.id) is None
            why = "its job was not stored" if gone else "its job changed while it was offered"
            await self._withdraw(record, created, why)
            return "withdrawn"
        if created is not None:
            if reply.accepted:
                await self.cancel_on_node(placement.node_id, record.id, "its record was not stored")
            raise created
        if reply.accepted:
            await self._history.execution(
                record,
                f"placed on {placement.node_id} (partition {placement.partition}, "
                f"attempt {placement.attempt})",
            )
            return "taken"
        known = self._mirror.executions.get(record.id)
        if known is not None and known.value.compute_state != "offered":
            return "taken"  # no answer, but the node already reported on it: it did take it
        metrics.placement_failed(_refusal(reply))
        if reply.reason.startswith(NOBODY_LISTENING):
            # Nobody refused anything: no record of a refusal. Not asked again until it is
            # heard again (an agent stopping, not started yet, or reconnecting).
            self._registry.not_listening(placement.node_id)
            await self._withdraw(record, None, "nobody took the bid")
            return "declined"
        if known is not None:
            rejected = msgspec.structs.replace(
                known.value,
                compute_state="rejected",
                desired_state="stopped",
                error=reply.reason,
                retryable=reply.busy,  # declined for want of room now: the job may wait
                updated_at=time.time(),
            )
            try:
                await self._mirror.update_execution(rejected)
            except Conflict:
                return "taken"  # the node already reported on it: it did take the job
            await self._history.execution(rejected, f"{placement.node_id} declined: {reply.reason}")
        return "declined"

    async def _unplaceable(
        self, job: wire.JobRecord, record: wire.ExecutionRecord, error: str
    ) -> Offered:
        """The execution, created failed (not retryable) with `error`, without asking its
        node; the job is evaluated again at once, and fails or retries by its policy."""
        metrics.placement_failed("unplaceable")
        failed = msgspec.structs.replace(
            record, compute_state="failed", desired_state="stopped", error=error, retryable=False
        )
        await self._mirror.create_execution(failed)
        await self._history.execution(failed, f"failed: {error}")
        self._later(job.id, time.time(), 0, None)
        return "taken"

    async def _withdraw(
        self,
        record: wire.ExecutionRecord,
        created: BaseException | None,
        reason: str,
    ) -> None:
        # An offer nothing was reported on is taken back whole: deleted, not stopped, so that
        # no cancelled execution stands in the history of a job with this id (an ops job
        # would count it as failed; the job may be stored after all, its create's ack lost).
        # One the node already reported on stays as reported: it ran, or runs, for real.
        if created is not None:
            await self.cancel_on_node(record.node_id, record.id, reason)
            return
        try:
            deleted = await self._mirror.delete_execution(record)
        except ShoalError as exc:
            log.warning("withdrawing %s: %s", record.id, exc)
            deleted = False
        if deleted:
            await self.cancel_on_node(record.node_id, record.id, reason)

    async def _bid(self, node_id: str, order: wire.ExecutionOrder) -> wire.BidReply:
        try:
            raw = await self._bus.request(
                subjects.compute_bid(node_id), wire.encode(order), timeout=self.bid_timeout
            )
            return wire.decode(raw, wire.BidReply, what="bid reply")
        except NoResponders as exc:
            return wire.BidReply(accepted=False, reason=f"{NOBODY_LISTENING} ({exc})", busy=True)
        except ShoalError as exc:
            return wire.BidReply(accepted=False, reason=f"{NO_ANSWER} ({exc})", busy=True)

    async def _set_job_state(self, job: wire.JobRecord, plan: Plan, now: float) -> None:
        known = self._mirror.job(job.id)
        if known is None:
            return
        if plan.state is None:
            return  # nothing to say about the job (e.g. it has ended): keep its message
        if known is not job and known != job:  # (the watch's echo of it is an equal copy)
            # Changed while its work was offered (a stop, a new version): the plan is stale.
            raise Conflict(f"job {job.id} changed while it was evaluated")
        state = plan.state
        queued_since = (
            plan.queued_since
            if plan.queued_since is not None
            else (known.queued_since if state == "Queued" else 0.0)
        )
        if (state, plan.message, queued_since) == (
            known.state,
            known.state_message,
            known.queued_since,
        ):
            return
        record = msgspec.structs.replace(
            known,
            state=state,
            state_message=plan.message,
            queued_since=queued_since,
            updated_at=now,
        )
        trace.mark("planner.writing-job", job.id)
        await self._mirror.update_job(record)
        trace.mark("planner.job-written", job.id)
        if state == known.state:
            return
        ended = state in wire.TERMINAL_JOB_STATES
        if ended:  # parsed again if it is ever evaluated again
            self._specs.forget(job)
        if known.state in ("Pending", "Queued") and (state == "Running" or self._ran(job.id)):
            metrics.started(record, now)
        if ended:
            metrics.ended(record, state, now)
        if ended:  # its executions' last events first
            await self._mirror.in_flight.wait_shown_executions(job.id)
        previous = known.state
        if ended and previous in ("Pending", "Queued") and self._ran(job.id):
            # Its tasks started and ended within the nodes' running hold-back: the job was
            # never written as Running, but its history says it ran.
            running = msgspec.structs.replace(record, state="Running", state_message="")
            await self._history.job(running, previous)
            previous = "Running"
        view = self._final_view(record) if ended else b""
        await self._history.job(record, previous, view=view)
        trace.mark("planner.event-sent", job.id)

    def _ran(self, job_id: str) -> bool:
        return any(ran(e) for e in self._mirror.executions_of(job_id))
