"""The schedulers: pure functions from (job, its executions, the nodes, now) to a Plan.

No I/O here: the planner applies the plan (KV writes, bids, commands). That keeps every
placement rule unit-testable without a server and makes re-planning after a refused bid cheap.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from orchestrator.selection import Demand, NodeState, Selection, select
from shared import wire
from shared.spec import JobSpec

RETRY_BASE_DELAY = 1.0
RETRY_MAX_DELAY = 60.0
SERVICE_HEALTHY_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class Placement:
    partition: int
    node_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Stop:
    """End an execution: `state` is the compute state to record (lost, cancelled)."""

    execution_id: str
    state: wire.ComputeState
    reason: str


@dataclass(slots=True)
class Plan:
    place: list[Placement] = field(default_factory=list)
    stop: list[Stop] = field(default_factory=list)
    state: wire.JobState | None = None
    message: str = ""
    queued_since: float | None = None
    evaluate_at: float | None = None  # re-evaluate then (backoff, queue or total timeout)

    def wake(self, at: float) -> None:
        self.evaluate_at = at if self.evaluate_at is None else min(self.evaluate_at, at)


@dataclass(frozen=True, slots=True)
class Context:
    job: wire.JobRecord
    spec: JobSpec
    executions: list[wire.ExecutionRecord]
    nodes: dict[str, NodeState]
    now: float
    refused: dict[int, frozenset[str]] = field(default_factory=dict)  # partition -> nodes


def backoff(failures: int) -> float:
    return float(min(RETRY_BASE_DELAY * 2.0 ** max(failures - 1, 0), RETRY_MAX_DELAY))


def schedule(ctx: Context) -> Plan:
    plan = Plan()
    job = ctx.job
    current = [e for e in ctx.executions if e.job_version == job.version]
    # Executions of older versions, and every live one once the job has ended, are stopped.
    for e in ctx.executions:
        if (
            e.live
            and e.desired_state == "running"
            and (e.job_version != job.version or job.state in wire.TERMINAL_JOB_STATES)
        ):
            plan.stop.append(
                Stop(
                    e.id,
                    "cancelled",
                    f"job is {job.state.lower()}"
                    if job.state in wire.TERMINAL_JOB_STATES
                    else "job was updated",
                )
            )
    if job.state in wire.TERMINAL_JOB_STATES:
        return plan
    live = _drop_lost(ctx, current, plan)
    total = ctx.spec.task.timeouts.total_timeout
    if total and job.type in ("batch", "ops"):
        deadline = job.created_at + total
        if ctx.now >= deadline:
            _fail(plan, live, f"TotalTimeout of {total:g}s exceeded")
            return plan
        plan.wake(deadline)
    if job.type == "batch":
        _batch(ctx, current, live, plan)
    elif job.type == "ops":
        _ops(ctx, current, live, plan)
    elif job.type == "daemon":
        _daemon(ctx, current, live, plan)
    else:
        _service(ctx, current, live, plan)
    return plan


def _drop_lost(
    ctx: Context, current: list[wire.ExecutionRecord], plan: Plan
) -> list[wire.ExecutionRecord]:
    """Live executions on nodes that are gone are lost; return the ones still live."""
    live = []
    for e in current:
        if not e.live or e.desired_state != "running":
            continue
        node = ctx.nodes.get(e.node_id)
        if node is None or not node.connected:
            plan.stop.append(Stop(e.id, "lost", f"node {e.node_id} was lost"))
        else:
            live.append(e)
    return live


def _fail(plan: Plan, live: list[wire.ExecutionRecord], message: str) -> None:
    plan.state, plan.message = "Failed", message
    plan.stop.extend(Stop(e.id, "cancelled", message) for e in live)


def _queue_or_fail(ctx: Context, plan: Plan, reason: str, waiting: int, running: int) -> None:
    """No node fits now: wait up to QueueTimeout (batch only), else fail with the reason."""
    queue_timeout = ctx.spec.task.timeouts.queue_timeout
    since = ctx.job.queued_since or ctx.now
    what = f"not enough nodes to run job: {waiting} execution(s) could not be placed: {reason}"
    if ctx.job.type == "batch" and queue_timeout and ctx.now < since + queue_timeout:
        plan.queued_since = since
        plan.wake(since + queue_timeout)
        plan.state = "Running" if running else "Queued"
        plan.message = f"waiting for a node (up to {queue_timeout:g}s): {reason}"
        return
    if queue_timeout and ctx.job.type == "batch":
        what = f"QueueTimeout of {queue_timeout:g}s exceeded; {what}"
    plan.state, plan.message = "Failed", what


def _place(
    ctx: Context,
    plan: Plan,
    wanted: list[tuple[int, int, frozenset[str]]],
    spread: Counter[str],
    distinct: bool = False,
) -> Selection | None:
    """Place (partition, attempt, avoid) items; returns the last failed selection, if any."""
    nodes = dict(ctx.nodes)
    failed: Selection | None = None
    for partition, attempt, avoid in wanted:
        refused = ctx.refused.get(partition, frozenset())
        candidates = [n for n in nodes.values() if n.id not in refused]
        if distinct:
            candidates = [n for n in candidates if spread[n.id] == 0]
        chosen = select(candidates, ctx.spec, spread=spread, avoid=avoid)
        if not chosen.fit:
            for node_id in refused:
                chosen.reasons[node_id] = "declined the bid"
            failed = chosen
            continue
        node = chosen.fit[0]
        plan.place.append(Placement(partition, node.id, attempt))
        nodes[node.id] = node.take(Demand.of(ctx.spec))
        spread[node.id] += 1
    return failed


def _batch(
    ctx: Context, current: list[wire.ExecutionRecord], live: list[wire.ExecutionRecord], plan: Plan
) -> None:
    count = ctx.spec.count or 1
    wanted: list[tuple[int, int, frozenset[str]]] = []
    done = 0
    spread: Counter[str] = Counter(e.node_id for e in live)
    lost_now = {s.execution_id for s in plan.stop}
    for p in range(count):
        mine = [e for e in current if e.partition == p]
        if any(e.compute_state == "completed" for e in mine):
            done += 1
            continue
        if any(e in live for e in mine):
            continue
        failures = [e for e in mine if e.compute_state in ("failed", "lost") or e.id in lost_now]
        last = failures[-1] if failures else None
        if last is not None and (len(failures) >= ctx.job.max_attempts or not last.retryable):
            error = last.error or f"exit code {last.exit_code}"
            if last.id in lost_now:
                error = f"node {last.node_id} was lost"
            tries = f"after {len(failures)} attempt{'s' if len(failures) > 1 else ''}"
            _fail(plan, live, f"partition {p} failed {tries}: {error}")
            return
        if last is not None:
            due = last.updated_at + backoff(len(failures))
            if ctx.now < due and last.id not in lost_now:
                plan.wake(due)
                continue
        wanted.append((p, len(failures) + 1, frozenset(e.node_id for e in failures)))
    if done == count:
        plan.state, plan.message = "Completed", ""
        return
    failed = _place(ctx, plan, wanted, spread)
    running = len(live) + len(plan.place)
    if failed is not None:
        waiting = len(wanted) - len(plan.place)
        _queue_or_fail(ctx, plan, failed.explain(), waiting, running)
        if plan.state == "Failed":
            plan.place.clear()
            plan.stop.extend(Stop(e.id, "cancelled", plan.message) for e in live)
        return
    plan.state = "Running" if running or done else ctx.job.state
    plan.message = ""


def _ops(
    ctx: Context, current: list[wire.ExecutionRecord], live: list[wire.ExecutionRecord], plan: Plan
) -> None:
    if not current:
        targets = select(ctx.nodes.values(), ctx.spec)
        if not targets.fit:
            _queue_or_fail(ctx, plan, targets.explain(), 1, 0)
            return
        plan.place.extend(Placement(0, n.id, 1) for n in targets.fit)
        plan.state, plan.message = "Running", ""
        return
    if live:
        plan.state = "Running"
        return
    ran = [e for e in current if e.compute_state != "rejected"]
    if not ran:
        reasons = "; ".join(f"{e.node_id}: {e.error}" for e in current)
        plan.state, plan.message = "Failed", f"every node declined the job: {reasons}"
        return
    lost_now = {s.execution_id for s in plan.stop}
    bad = [e for e in ran if e.compute_state != "completed" or e.id in lost_now]
    if not bad:
        plan.state, plan.message = "Completed", ""
        return
    first = bad[0]
    why = (
        f"node {first.node_id} was lost"
        if first.id in lost_now
        else (first.error or f"exit code {first.exit_code}")
    )
    plan.state = "Failed"
    plan.message = f"{len(bad)} of {len(ran)} execution(s) failed; {first.node_id}: {why}"


def _restart_due(ctx: Context, history: list[wire.ExecutionRecord]) -> float:
    """When a long-running replica may restart: backoff grows with recent failures."""
    recent = [
        e for e in history if not e.live and e.compute_state in ("failed", "completed", "lost")
    ]
    if not recent:
        return ctx.now
    last = max(recent, key=lambda e: e.updated_at)
    streak = 0
    for e in sorted(recent, key=lambda e: e.updated_at, reverse=True):
        if e.updated_at - e.created_at >= SERVICE_HEALTHY_AFTER:
            break
        streak += 1
    return last.updated_at + backoff(streak) if streak else ctx.now


def _daemon(
    ctx: Context, current: list[wire.ExecutionRecord], live: list[wire.ExecutionRecord], plan: Plan
) -> None:
    on_node = {e.node_id for e in live}
    targets = select(ctx.nodes.values(), ctx.spec)
    fit_ids = {n.id for n in targets.fit}
    for e in live:  # a node that no longer matches (labels, drain) stops its copy
        node = ctx.nodes[e.node_id]
        if e.node_id not in fit_ids and not targets.reasons.get(e.node_id, "").startswith("busy"):
            plan.stop.append(
                Stop(
                    e.id,
                    "cancelled",
                    f"node {node.id} {targets.reasons.get(node.id, 'no longer fits')}",
                )
            )
    for node in targets.fit:
        if node.id in on_node:
            continue
        history = [e for e in current if e.node_id == node.id]
        due = _restart_due(ctx, history)
        if due > ctx.now:
            plan.wake(due)
            continue
        plan.place.append(Placement(0, node.id, len(history) + 1))
    plan.state = "Running"
    plan.message = "" if targets.fit or live else f"no node to run on yet: {targets.explain()}"


def _service(
    ctx: Context, current: list[wire.ExecutionRecord], live: list[wire.ExecutionRecord], plan: Plan
) -> None:
    count = ctx.spec.count or 1
    stopping = {s.execution_id for s in plan.stop}
    healthy = [e for e in live if e.id not in stopping and not ctx.nodes[e.node_id].drain]
    draining = [e for e in live if ctx.nodes[e.node_id].drain and e.id not in stopping]
    by_partition: dict[int, list[wire.ExecutionRecord]] = {}
    for e in healthy:
        by_partition.setdefault(e.partition, []).append(e)
    for extras in by_partition.values():  # never more than one replica per partition
        for e in sorted(extras, key=lambda e: e.created_at)[1:]:
            plan.stop.append(Stop(e.id, "cancelled", "duplicate replica"))
    spread: Counter[str] = Counter(e.node_id for e in healthy)
    wanted = []
    for p in range(count):
        if p in by_partition:
            continue
        history = [e for e in current if e.partition == p]
        due = _restart_due(ctx, history)
        if due > ctx.now:
            plan.wake(due)
            continue
        avoid = frozenset(e.node_id for e in history if e.compute_state in ("failed", "lost"))
        wanted.append((p, len(history) + 1, avoid))
    for p in range(count, max(by_partition, default=-1) + 1):  # scaled down
        plan.stop.extend(Stop(e.id, "cancelled", "scaled down") for e in by_partition.get(p, []))
    failed = _place(ctx, plan, wanted, spread, distinct=False)
    placed = {pl.partition for pl in plan.place}
    for e in draining:  # replace first, then stop the replica on the draining node
        if e.partition in placed or e.partition not in {w[0] for w in wanted}:
            plan.stop.append(Stop(e.id, "cancelled", f"node {e.node_id} is draining"))
    plan.state = "Running"
    plan.message = "" if failed is None else f"waiting for nodes: {failed.explain()}"
