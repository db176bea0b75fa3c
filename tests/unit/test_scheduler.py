"""The schedulers as pure functions: placement, retries, queueing, ops, daemon, service."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from orchestrator.placing import PLAN_BATCH
from orchestrator.scheduler import Context, Plan, backoff, schedule
from orchestrator.selection import NodeState, select
from shared import wire
from shared.spec import JobSpec, spec_from_data

GIB = 1024**3
NOW = 1_000_000.0


def node(
    node_id: str,
    *,
    labels: dict[str, str] | None = None,
    engines: tuple[str, ...] = ("noop", "wasm"),
    cpu: int = 2000,
    mem: int = 4 * GIB,
    connected: bool = True,
    drain: bool = False,
    approval: str = "APPROVED",
) -> NodeState:
    cap = wire.Capacity(cpu_millis=cpu, memory_bytes=mem)
    return NodeState(
        id=node_id,
        labels={"name": node_id, **(labels or {})},
        engines=frozenset(engines),
        publishers=frozenset({"nats", "local", "noop"}),
        sources=frozenset({"inline", "localDirectory"}),
        capacity=cap,
        free=cap,
        approval=approval,
        connected=connected,
        drain=drain,
    )


def spec(job_type: str = "batch", **fields: Any) -> JobSpec:
    task = fields.pop("task", {})
    data = {"Type": job_type, "Tasks": [{"Engine": {"Type": "noop"}, **task}], **fields}
    return spec_from_data(data)


def job(
    s: JobSpec,
    *,
    state: wire.JobState = "Pending",
    version: int = 1,
    queued_since: float = 0.0,
    max_attempts: int = 3,
) -> wire.JobRecord:
    return wire.JobRecord(
        id="j-1",
        name="j",
        namespace="default",
        type=s.type,
        spec=msgspec.Raw(json.dumps(s.dump()).encode()),
        version=version,
        state=state,
        created_at=NOW - 10,
        queued_since=queued_since,
        max_attempts=max_attempts,
    )


def execution(
    exec_id: str,
    node_id: str,
    state: wire.ComputeState,
    *,
    partition: int = 0,
    version: int = 1,
    updated: float = NOW - 5,
    created: float = NOW - 6,
    exit_code: int | None = None,
    error: str = "",
) -> wire.ExecutionRecord:
    return wire.ExecutionRecord(
        id=exec_id,
        job_id="j-1",
        namespace="default",
        node_id=node_id,
        job_version=version,
        partition=partition,
        compute_state=state,
        created_at=created,
        updated_at=updated,
        exit_code=exit_code,
        error=error,
        desired_state="running" if state in wire.LIVE_COMPUTE_STATES else "stopped",
    )


def plan_for(
    s: JobSpec, execs: list[wire.ExecutionRecord], nodes: list[NodeState], **job_fields: Any
) -> Plan:
    return schedule(Context(job(s, **job_fields), s, execs, {n.id: n for n in nodes}, NOW))


def test_batch_places_count_partitions_spread_over_nodes() -> None:
    plan = plan_for(spec(Count=3), [], [node("a"), node("b"), node("c")])
    assert sorted(p.partition for p in plan.place) == [0, 1, 2]
    assert len({p.node_id for p in plan.place}) == 3
    assert plan.state == "Pending"  # placed, but no task has started yet


def test_batch_job_is_running_once_a_task_started() -> None:
    s = spec(Count=2)
    accepted = [execution("e0", "a", "accepted"), execution("e1", "b", "accepted", partition=1)]
    assert plan_for(s, accepted, [node("a"), node("b")]).state == "Pending"
    one_runs = [accepted[0], execution("e1", "b", "running", partition=1)]
    assert plan_for(s, one_runs, [node("a"), node("b")]).state == "Running"
    # a task that ended (with an exit code) started, even if "running" was never reported
    failed = execution("e0", "a", "failed", updated=NOW - 0.5, exit_code=3)
    assert plan_for(spec(), [failed], [node("a"), node("b")]).state == "Running"
    # one that failed before it ran (no exit code) did not
    unstarted = execution("e0", "a", "failed", updated=NOW - 0.5)
    assert plan_for(spec(), [unstarted], [node("a"), node("b")]).state == "Pending"
    # once Running, a retry being placed does not take the job back to Pending
    again = plan_for(spec(), [unstarted], [node("a"), node("b")], state="Running")
    assert again.state == "Running"


def test_batch_completes_when_every_partition_completed() -> None:
    s = spec(Count=2)
    execs = [
        execution("e0", "a", "completed", exit_code=0),
        execution("e1", "b", "completed", partition=1, exit_code=0),
    ]
    assert plan_for(s, execs, [node("a"), node("b")]).state == "Completed"


def test_failed_partition_retried_on_another_node_after_backoff() -> None:
    s = spec()
    failed = execution("e0", "a", "failed", updated=NOW - 0.5, exit_code=3)
    waiting = plan_for(s, [failed], [node("a"), node("b")])
    assert waiting.place == [] and waiting.evaluate_at == failed.updated_at + backoff(1)
    failed = execution("e0", "a", "failed", updated=NOW - 2, exit_code=3)
    retry = plan_for(s, [failed], [node("a"), node("b")])
    assert [(p.node_id, p.attempt) for p in retry.place] == [("b", 2)]


def test_job_fails_after_max_attempts_with_last_error() -> None:
    execs = [
        execution(f"e{i}", n, "failed", updated=NOW - 100, error=f"boom {i}")
        for i, n in enumerate("abc")
    ]
    plan = plan_for(spec(), execs, [node("a"), node("b"), node("c")])
    assert plan.state == "Failed"
    assert "after 3 attempts" in plan.message and "boom 2" in plan.message


def test_unknown_engine_fails_with_reason_naming_it() -> None:
    s = spec(task={"Engine": {"Type": "vroomvroom"}})
    plan = plan_for(s, [], [node("a"), node("b")])
    assert plan.state == "Failed"
    assert "not enough nodes to run job" in plan.message
    assert "does not support engine vroomvroom" in plan.message


def test_batch_queues_until_queue_timeout_then_fails() -> None:
    s = spec(
        Constraints=[{"Key": "gpu", "Operator": "=", "Values": ["a100"]}],
        task={"Timeouts": {"QueueTimeout": 60}},
    )
    queued = plan_for(s, [], [node("a")])
    assert queued.state == "Queued" and "gpu = a100" in queued.message
    assert queued.queued_since == NOW and queued.evaluate_at == NOW + 60
    expired = plan_for(s, [], [node("a")], state="Queued", queued_since=NOW - 61)
    assert expired.state == "Failed" and "QueueTimeout" in expired.message
    placed = plan_for(
        s, [], [node("a"), node("g", labels={"gpu": "a100"})], state="Queued", queued_since=NOW - 5
    )
    assert [p.node_id for p in placed.place] == ["g"] and placed.state == "Pending"


def test_resources_filter_and_explain() -> None:
    s = spec(task={"Resources": {"Memory": "8Gi"}})
    plan = plan_for(s, [], [node("a"), node("b")])
    assert plan.state == "Failed" and "too little memory" in plan.message


def test_partitions_placed_in_one_plan_use_up_the_nodes_capacity() -> None:
    # A node with room for two such tasks takes two partitions; the third waits for room.
    # The same on a fleet large enough to be sampled, where that node is the only one with the
    # engine: the others can never run the task, so they do not make the job fail.
    s = spec(Count=3, task={"Resources": {"CPU": "1"}})
    for others in ([], [node(f"w{i}", engines=("wasm",)) for i in range(200)]):
        plan = plan_for(s, [], [*others, node("a", cpu=2000)])
        assert [p.node_id for p in plan.place] == ["a", "a"]
        assert plan.state == "Queued" and "busy" in plan.message, plan.message


def test_lost_node_marks_execution_lost_and_retries_elsewhere() -> None:
    running = execution("e0", "a", "running")
    plan = plan_for(spec(), [running], [node("a", connected=False), node("b")])
    assert [(s.execution_id, s.state) for s in plan.stop] == [("e0", "lost")]
    assert [p.node_id for p in plan.place] == ["b"]


def test_total_timeout_fails_and_cancels() -> None:
    s = spec(task={"Timeouts": {"TotalTimeout": 5}})
    plan = plan_for(s, [execution("e0", "a", "running")], [node("a")])
    assert plan.state == "Failed" and "TotalTimeout" in plan.message
    assert [st.state for st in plan.stop] == ["cancelled"]


def test_ops_runs_everywhere_matching_and_fails_when_none() -> None:
    s = spec("ops", Constraints=[{"Key": "role", "Operator": "=", "Values": ["web"]}])
    nodes = [
        node("a", labels={"role": "web"}),
        node("b", labels={"role": "db"}),
        node("c", labels={"role": "web"}),
    ]
    assert sorted(p.node_id for p in plan_for(s, [], nodes).place) == ["a", "c"]
    assert plan_for(s, [], [node("b")]).state == "Failed"
    done = [
        execution("e0", "a", "completed", exit_code=0),
        execution("e1", "c", "failed", exit_code=1),
    ]
    assert plan_for(s, done, nodes).state == "Failed"


def test_daemon_places_on_every_node_and_restarts_with_backoff() -> None:
    s = spec("daemon")
    plan = plan_for(s, [execution("e0", "a", "running")], [node("a"), node("b")])
    assert [p.node_id for p in plan.place] == ["b"]
    exited = execution("e0", "a", "completed", updated=NOW - 0.2, created=NOW - 1)
    later = plan_for(s, [exited], [node("a")])
    assert later.place == [] and later.evaluate_at is not None
    assert plan_for(s, [], []).state == "Running"  # no node: waits, never fails


def test_a_scoped_daemon_evaluation_decides_for_its_nodes_and_not_for_the_job() -> None:
    """Only some nodes and what runs there (nodes joined or changed): copies placed, stopped
    or restarted there as a whole evaluation would, but no rollout step (it goes one node at
    a time across the fleet, unseen here) and nothing said about the job."""
    s = spec("daemon", Constraints=[{"Key": "role", "Operator": "=", "Values": ["edge"]}])
    running = job(s, state="Running", version=2)

    def scoped(execs: list[wire.ExecutionRecord], nodes: list[NodeState]) -> Plan:
        nodes_by_id = {n.id: n for n in nodes}
        return schedule(Context(running, s, execs, nodes_by_id, NOW, scoped=True))

    joined = scoped([], [node("new", labels={"role": "edge"})])
    assert [(p.node_id, p.attempt) for p in joined.place] == [("new", 1)]
    assert joined.state is None and joined.message == ""
    # nothing fits in this view: a whole evaluation would say "no node"; this one says nothing
    unfit = scoped([], [node("core", labels={"role": "core"})])
    assert unfit.place == [] and unfit.state is None
    # a node that stopped matching stops its copy
    stale = scoped([execution("e0", "core", "running", version=2)], [node("core")])
    assert [(st.execution_id, st.state) for st in stale.stop] == [("e0", "cancelled")]
    # an old version's copy is not rolled from here, where a whole evaluation rolls it
    old = [execution("e1", "a", "running", version=1)]
    edge = [node("a", labels={"role": "edge"})]
    assert scoped(old, edge).place == []
    whole = schedule(Context(running, s, old, {n.id: n for n in edge}, NOW))
    assert [p.node_id for p in whole.place] == ["a"] and whole.state == "Running"


def test_a_daemon_does_not_ask_a_node_that_just_declined_again() -> None:
    s = spec("daemon")
    nodes = {n.id: n for n in (node("a"), node("b"))}
    ctx = Context(job(s, state="Running"), s, [], nodes, NOW, refused={0: frozenset({"a"})})
    assert [p.node_id for p in schedule(ctx).place] == ["b"]


def test_attempts_count_each_nodes_or_partitions_own_history() -> None:
    """The history an attempt number and backoff come from is the node's (daemon) or the
    partition's (batch, service) alone, however the records are interleaved."""
    lost = [
        execution("a1", "a", "lost", partition=0),
        execution("b1", "b", "lost", partition=1),
        execution("a2", "a", "lost", partition=0),
        execution("c1", "c", "lost", partition=2),
        execution("a3", "a", "lost", partition=0),
        execution("b2", "b", "lost", partition=1),
    ]
    nodes = [node("a"), node("b"), node("c"), node("d")]
    daemon = plan_for(spec("daemon"), [*lost, execution("d1", "d", "running")], nodes)
    assert sorted((p.node_id, p.attempt) for p in daemon.place) == [("a", 4), ("b", 3), ("c", 2)]
    service = plan_for(spec("service", Count=4), lost, nodes)
    assert sorted((p.partition, p.attempt) for p in service.place) == [
        (0, 4),
        (1, 3),
        (2, 2),
        (3, 1),
    ]
    batch = plan_for(spec(Count=4), lost, nodes, max_attempts=5)
    assert sorted((p.partition, p.attempt) for p in batch.place) == [(0, 4), (1, 3), (2, 2), (3, 1)]
    # a partition's completion is its own: partition 1 done, the others still to place
    done = [*lost, execution("b3", "b", "completed", partition=1, exit_code=0)]
    again = plan_for(spec(Count=4), done, nodes, max_attempts=5)
    assert sorted(p.partition for p in again.place) == [0, 2, 3]


def test_service_keeps_count_and_replaces_lost_replica() -> None:
    s = spec("service", Count=2)
    execs = [execution("e0", "a", "running"), execution("e1", "b", "running", partition=1)]
    plan = plan_for(s, execs, [node("a"), node("b", connected=False), node("c")])
    assert [(st.execution_id, st.state) for st in plan.stop] == [("e1", "lost")]
    assert [(p.partition, p.node_id) for p in plan.place] == [(1, "c")]


def test_service_rolls_one_replica_at_a_time() -> None:
    s = spec("service", Count=2)
    old = [
        execution("o0", "a", "running", version=1),
        execution("o1", "b", "running", partition=1, version=1),
    ]
    first = plan_for(s, old, [node("a"), node("b"), node("c")], version=2)
    assert len(first.place) == 1 and first.stop == []
    new0 = execution(
        "n0", first.place[0].node_id, "running", partition=first.place[0].partition, version=2
    )
    second = plan_for(s, [*old, new0], [node("a"), node("b"), node("c")], version=2)
    stopped = {st.execution_id for st in second.stop}
    assert len(stopped) == 1 and len(second.place) == 1  # old one of p stops, next p rolls


def test_drained_node_gets_no_new_work() -> None:
    s = spec(Count=1)
    plan = plan_for(s, [], [node("a", drain=True), node("b")])
    assert [p.node_id for p in plan.place] == ["b"]


def test_selection_reasons_are_grouped() -> None:
    s = spec(task={"Engine": {"Type": "docker", "Params": {"Image": "x"}}})
    sel = select([node("a"), node("b"), node("c", approval="PENDING")], s)
    text = sel.explain()
    assert "does not support engine docker (2 nodes: a, b)" in text
    assert "node is pending (1 node: c)" in text


def test_a_large_batch_is_placed_a_batch_at_a_time() -> None:
    """Count above PLAN_BATCH: one plan places the first PLAN_BATCH partitions and wakes at
    once for the rest; the next places the following ones, and says Running once one ran."""
    s = spec(Count=2 * PLAN_BATCH + 5, task={"Resources": {"CPU": "1m", "Memory": "1Mb"}})
    nodes = [node("a", cpu=10**6, mem=10**6 * GIB), node("b", cpu=10**6, mem=10**6 * GIB)]
    first = plan_for(s, [], nodes)
    assert [p.partition for p in first.place] == list(range(PLAN_BATCH))
    assert first.evaluate_at == NOW and first.state == "Pending"
    placed = [
        execution(f"e{p.partition}", p.node_id, "completed" if p.partition < 3 else "running",
                  partition=p.partition, exit_code=0 if p.partition < 3 else None)
        for p in first.place
    ]  # fmt: skip
    second = plan_for(s, placed, nodes)
    assert [p.partition for p in second.place] == list(range(PLAN_BATCH, 2 * PLAN_BATCH))
    assert second.evaluate_at == NOW and second.state == "Running"


def test_a_failed_partition_beyond_the_batch_still_fails_the_job() -> None:
    """Partitions past the batch are still looked at: one out of attempts fails the job."""
    s = spec(Count=PLAN_BATCH + 10)
    last = PLAN_BATCH + 9
    failed = [
        execution(f"e{i}", "a", "failed", partition=last, exit_code=1, error="boom")
        for i in range(3)
    ]
    plan = plan_for(s, failed, [node("a")])
    assert plan.state == "Failed" and f"partition {last} failed after 3 attempts" in plan.message
    assert not plan.place
