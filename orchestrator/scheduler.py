"""The schedulers: pure functions from (job, its executions, the nodes, now) to a Plan.

No I/O here: the planner applies the plan (KV writes, bids, commands). That keeps every
placement rule unit-testable without a server and makes re-planning after a refused bid cheap.
"""

from __future__ import annotations

from collections import Counter

from orchestrator.placing import PLAN_BATCH, place, queue_or_fail
from orchestrator.plans import Context, Placement, Plan, Stop, backoff, grouped, ran, refusals
from orchestrator.selection import quoted, select
from shared import wire

__all__ = ["Context", "Placement", "Plan", "Stop", "backoff", "ran", "schedule"]

SERVICE_HEALTHY_AFTER = 60.0


def schedule(ctx: Context) -> Plan:
    plan = Plan()
    job = ctx.job
    if job.state in wire.TERMINAL_JOB_STATES:
        reason = f"job is {job.state.lower()}"
        plan.stop.extend(
            Stop(e.id, "cancelled", reason)
            for e in ctx.executions
            if e.live and e.desired_state == "running"
        )
        return plan
    current = [e for e in ctx.executions if e.job_version == job.version]
    live = _drop_lost(ctx, ctx.executions, plan)
    old = [e for e in live if e.job_version != job.version]
    live = [e for e in live if e.job_version == job.version]
    if job.type in ("batch", "ops"):  # a new version replaces the old at once
        plan.stop.extend(Stop(e.id, "cancelled", "job was updated") for e in old)
        old = []
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
        _daemon(ctx, current, live, old, plan)
    else:
        _service(ctx, current, live, old, plan)
    return plan


def _drop_lost(
    ctx: Context, executions: list[wire.ExecutionRecord], plan: Plan
) -> list[wire.ExecutionRecord]:
    """Live executions on nodes that are gone are lost; return the ones still live."""
    live = []
    for e in executions:
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


def _placed_state(ctx: Context, started: bool) -> wire.JobState:
    """A batch or ops job is Running once one of its tasks has started. Until then it stays
    Pending, so a task that ends within the node's running hold-back takes the job straight
    to its end (one state write instead of two; the planner still records both in history)."""
    if started:
        return "Running"
    return "Pending" if ctx.job.state == "Queued" else ctx.job.state


def _batch(
    ctx: Context, current: list[wire.ExecutionRecord], live: list[wire.ExecutionRecord], plan: Plan
) -> None:
    count = ctx.spec.count or 1
    wanted: list[tuple[int, int, frozenset[str]]] = []
    spread: Counter[str] = Counter(e.node_id for e in live)
    lost_now = {s.execution_id for s in plan.stop}
    live_ids = {e.id for e in live}
    # One pass over the executions, then only the partitions with something left to do: a
    # job of 100,000 partitions is evaluated once per placed batch, mostly done or running.
    completed: set[int] = set()
    busy: set[int] = set()
    failures: dict[int, list[wire.ExecutionRecord]] = {}
    for e in current:
        if e.compute_state == "completed":
            completed.add(e.partition)
        elif e.id in live_ids:
            busy.add(e.partition)
        elif e.compute_state in ("failed", "lost") or e.id in lost_now:
            failures.setdefault(e.partition, []).append(e)
    done = sum(1 for p in completed if p < count)
    unplaced = 0  # wanted, beyond the batch this plan can place
    for p in sorted(set(range(count)) - completed - busy):
        tried = failures.get(p)
        if tried is None:
            if len(wanted) < PLAN_BATCH:
                wanted.append((p, 1, frozenset()))
            else:
                unplaced += 1
            continue
        last = tried[-1]
        if len(tried) >= ctx.job.max_attempts or not last.retryable:
            error = last.error or f"exit code {last.exit_code}"
            if last.id in lost_now:
                error = f"node {last.node_id} was lost"
            times = f"after {len(tried)} attempt{'s' if len(tried) > 1 else ''}"
            _fail(plan, live, f"partition {p} failed {times}: {error}")
            return
        due = last.updated_at + backoff(len(tried))
        if ctx.now < due and last.id not in lost_now:
            plan.wake(due)
            continue
        if len(wanted) < PLAN_BATCH:
            wanted.append((p, len(tried) + 1, frozenset(e.node_id for e in tried)))
        else:
            unplaced += 1
    if done == count:
        plan.state, plan.message = "Completed", ""
        return
    if unplaced:
        plan.wake(ctx.now)
    failed = place(ctx, plan, wanted, spread)
    started = done > 0 or any(ran(e) for e in current)
    if failed is not None:
        waiting = len(wanted) + unplaced - len(plan.place)
        queue_or_fail(ctx, plan, failed, waiting, started)
        if plan.state == "Failed":
            plan.place.clear()
            plan.stop.extend(Stop(e.id, "cancelled", plan.message) for e in live)
        return
    plan.state = _placed_state(ctx, started)
    plan.message = ""


def _ops(
    ctx: Context, current: list[wire.ExecutionRecord], live: list[wire.ExecutionRecord], plan: Plan
) -> None:
    if not current:
        targets = select(ctx.nodes.values(), ctx.spec, ranked=False)
        if not targets.fit:
            queue_or_fail(ctx, plan, targets, 1, False)
            return
        plan.place.extend(Placement(0, n.id, 1) for n in targets.fit)
        plan.state, plan.message = _placed_state(ctx, False), ""
        return
    if live:
        plan.state = _placed_state(ctx, any(ran(e) for e in current))
        return
    tried = [e for e in current if e.compute_state != "rejected"]
    if not tried:
        said = {node_id: text for (_, node_id), text in refusals(current).items()}
        plan.state, plan.message = "Failed", f"every node declined the job: {quoted(said)}"
        return
    lost_now = {s.execution_id for s in plan.stop}
    bad = [e for e in tried if e.compute_state != "completed" or e.id in lost_now]
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
    plan.message = f"{len(bad)} of {len(tried)} execution(s) failed; {first.node_id}: {why}"


def _restart_due(ctx: Context, history: list[wire.ExecutionRecord]) -> float:
    """When a long-running replica may restart: backoff grows with the task's own recent
    exits. A lost node or a stopped agent is not the task's doing: restart at once."""
    recent = [e for e in history if not e.live and e.compute_state in ("failed", "completed")]
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
    ctx: Context,
    current: list[wire.ExecutionRecord],
    live: list[wire.ExecutionRecord],
    old: list[wire.ExecutionRecord],
    plan: Plan,
) -> None:
    """One copy per fitting node; a new version replaces old copies one node at a time."""
    targets = select(ctx.nodes.values(), ctx.spec, ranked=False)
    fit_ids = {n.id for n in targets.fit}
    new_on = {e.node_id: e for e in live}
    old_on: dict[str, list[wire.ExecutionRecord]] = {}
    for e in old:
        old_on.setdefault(e.node_id, []).append(e)
    for e in live + old:  # a node that stopped matching (labels, approval) stops its copy
        why = targets.reasons.get(e.node_id, "")
        if e.node_id not in fit_ids and not why.startswith("busy") and why != "node is draining":
            plan.stop.append(Stop(e.id, "cancelled", f"node {e.node_id} {why or 'does not fit'}"))
    rolling: list[str] = []
    in_flight = 0
    for node_id, olds in old_on.items():
        new = new_on.get(node_id)
        if new is not None and new.compute_state == "running":
            plan.stop.extend(Stop(e.id, "cancelled", "replaced by the new version") for e in olds)
        elif new is not None:
            in_flight += 1
        elif node_id in fit_ids:
            rolling.append(node_id)
    refused = ctx.refused.get(0, frozenset())  # declined just now: not asked again at once
    bare = [
        n for n in targets.fit if n.id not in new_on and n.id not in old_on and n.id not in refused
    ]
    of_node = grouped(current, lambda e: e.node_id) if bare else {}
    for node in bare:
        history = of_node.get(node.id, [])
        due = _restart_due(ctx, history)
        if due > ctx.now:
            plan.wake(due)
            continue
        plan.place.append(Placement(0, node.id, len(history) + 1))
    if ctx.scoped:
        # A rollout goes one node at a time across the whole fleet, which this view does not
        # show; nor does it show whether any node runs the job at all.
        return
    if rolling and not in_flight:
        plan.place.append(Placement(0, sorted(rolling)[0], 1))
    plan.state = "Running"
    plan.message = "" if targets.fit or live else f"no node to run on yet: {targets.explain()}"


def _service(
    ctx: Context,
    current: list[wire.ExecutionRecord],
    live: list[wire.ExecutionRecord],
    old: list[wire.ExecutionRecord],
    plan: Plan,
) -> None:
    """Count replicas, one per partition; replaced on failure, moved off draining nodes,
    and rolled to a new version one replica at a time (never below Count-1 running)."""
    count = ctx.spec.count or 1
    stopping = {s.execution_id for s in plan.stop}
    by_partition: dict[int, list[wire.ExecutionRecord]] = {}
    for e in live:
        if e.id not in stopping:
            by_partition.setdefault(e.partition, []).append(e)
    for extras in by_partition.values():  # never more than one replica per partition
        for e in sorted(extras, key=lambda e: e.created_at)[1:]:
            plan.stop.append(Stop(e.id, "cancelled", "duplicate replica"))
    for p in [p for p in by_partition if p >= count]:  # scaled down
        plan.stop.extend(Stop(e.id, "cancelled", "scaled down") for e in by_partition.pop(p))
    replica = {p: sorted(es, key=lambda e: e.created_at)[0] for p, es in by_partition.items()}
    old_of: dict[int, wire.ExecutionRecord] = {}
    for e in sorted(old, key=lambda e: e.created_at):
        if e.partition < count and e.partition not in old_of:
            old_of[e.partition] = e
        else:
            plan.stop.append(Stop(e.id, "cancelled", "replaced by the new version"))
    spread: Counter[str] = Counter(e.node_id for e in live + old)
    wanted: list[tuple[int, int, frozenset[str]]] = []
    in_flight, rolling = 0, []
    of_partition = grouped(current, lambda e: e.partition)
    for p in range(count):
        new, previous = replica.get(p), old_of.get(p)
        if new is not None:
            if previous is not None and new.compute_state == "running":
                plan.stop.append(Stop(previous.id, "cancelled", "replaced by the new version"))
            elif previous is not None or new.compute_state != "running":
                in_flight += previous is not None
            if ctx.nodes[new.node_id].drain and new.compute_state == "running":
                rolling.append(p)  # move it off, like an update
            continue
        if previous is not None:
            rolling.append(p)
            continue
        history = of_partition.get(p, [])
        due = _restart_due(ctx, history)
        if due > ctx.now:
            plan.wake(due)
            continue
        avoid = frozenset(e.node_id for e in history if e.compute_state in ("failed", "lost"))
        wanted.append((p, len(history) + 1, avoid))
    if rolling and not in_flight:
        p = rolling[0]
        moving = replica[p] if p in replica else old_of[p]
        wanted.append((p, len(of_partition.get(p, [])) + 1, frozenset({moving.node_id})))
    failed = place(ctx, plan, wanted, spread)
    placed = {pl.partition for pl in plan.place}
    for p in rolling:  # a drained replica stops once its replacement was placed
        drained = replica.get(p)
        if drained is not None and p in placed:
            why = f"node {drained.node_id} is draining"
            plan.stop.append(Stop(drained.id, "cancelled", why))
    plan.state = "Running"
    plan.message = "" if failed is None else f"waiting for nodes: {failed.explain()}"
