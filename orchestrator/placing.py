"""Placing a job's executions on nodes, and when none fits, what the job does instead: waits
in the queue or fails, with the reasons (each node's own words when it declined the bid)."""

from __future__ import annotations

from collections import Counter

from orchestrator.plans import Context, Placement, Plan, refusals
from orchestrator.selection import NodeState, Selection, listed, select
from shared import wire

# A plan places at most this many executions; the job is evaluated again at once for the
# rest. A job of 100,000 partitions placed in one plan kept its state unwritten (Pending) until
# the last offer was answered, and a stop or a lost node waited behind all of it; between
# batches its state, a stop and other jobs' evaluations get their turn.
PLAN_BATCH = 2_000


def queue_or_fail(
    ctx: Context, plan: Plan, selection: Selection, waiting: int, started: bool
) -> None:
    """No node fits now: wait up to QueueTimeout (batch only), else fail with the reason.

    When every matching node is merely busy, a batch job waits for capacity even without a
    QueueTimeout: that is a matter of time, not a job that can never run.
    """
    reason = selection.explain()
    queue_timeout = ctx.spec.task.timeouts.queue_timeout
    since = ctx.job.queued_since or ctx.now
    what = f"not enough nodes to run job: {waiting} execution(s) could not be placed: {reason}"
    if ctx.job.type == "batch" and (
        (queue_timeout and ctx.now < since + queue_timeout)
        or (not queue_timeout and selection.capacity_bound)
    ):
        plan.queued_since = since
        if queue_timeout:
            plan.wake(since + queue_timeout)
        plan.state = "Running" if started else "Queued"
        limit = f" (up to {queue_timeout:g}s)" if queue_timeout else ""
        plan.message = f"waiting for a node{limit}: {reason}"
        return
    if queue_timeout and ctx.job.type == "batch":
        what = f"QueueTimeout of {queue_timeout:g}s exceeded; {what}"
    plan.state, plan.message = "Failed", what


def place(
    ctx: Context,
    plan: Plan,
    wanted: list[tuple[int, int, frozenset[str]]],
    spread: Counter[str],
) -> Selection | None:
    """Place (partition, attempt, avoid) items; returns the last failed selection, if any.

    Neither copies nor walks the fleet in Python: nodes placed on in this plan are looked up
    in `taken` (with what they took subtracted), and `select` samples a large fleet. At most
    PLAN_BATCH are placed; the plan then wakes at once for the rest."""
    taken: dict[str, NodeState] = {}
    pool = listed(ctx.nodes)
    failed: Selection | None = None
    said: dict[tuple[int, str], str] | None = None
    for partition, attempt, avoid in wanted:
        if len(plan.place) >= PLAN_BATCH:
            plan.wake(ctx.now)
            break
        refused = ctx.refused.get(partition, frozenset())
        chosen = select(
            pool,
            ctx.spec,
            spread=spread,
            avoid=avoid,
            sample=True,
            skip=refused,
            overlay=taken,
        )
        if not chosen.fit:
            if said is None and refused:
                said = refusals(ctx.executions)
            for node_id in refused:
                # In the node's words; one that declined for want of room is busy: the job
                # waits for it.
                words = (said or {}).get((partition, node_id), "")
                chosen.declined[node_id] = words or "declined the bid"
                if node_id in ctx.declined_busy:
                    chosen.declined_busy.add(node_id)
            failed = chosen
            continue
        node = chosen.fit[0]
        plan.place.append(Placement(partition, node.id, attempt))
        taken[node.id] = node.take(wire.Capacity.of(ctx.spec.task.resources))
        spread[node.id] += 1
    return failed
