"""The scheduler's own cost, without NATS: `schedule()` over the registry's view of K nodes,
as the planner calls it per evaluation. First one trivial batch task by fleet size; then whole
evaluations of large jobs (a daemon when one node joins, or after every node restarted; a
batch job of 1,000 partitions; a service of 1,000 replicas all gone).

.venv/bin/python -m bench.schedule [N]          # N schedules per fleet size (default 500)
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import msgspec

from orchestrator.scheduler import Context, schedule
from orchestrator.selection import NodeState, NodeTable
from shared import wire
from shared.spec import JobSpec
from shared.spec.loader import spec_from_data

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
FLEETS = (3, 1_000, 10_000)


def fleet(k: int) -> NodeTable:
    """K nodes in the table the registry keeps (and hands the planner)."""
    cap = wire.Capacity(cpu_millis=4000, memory_bytes=8 << 30, disk_bytes=100 << 30)
    table = NodeTable()
    for i in range(k):
        table.put(
            NodeState(
                id=f"n{i}",
                labels={"name": f"n{i}", "os_type": "linux"},
                engines=frozenset({"noop", "wasm"}),
                publishers=frozenset({"nats", "noop"}),
                sources=frozenset(),
                capacity=cap,
                free=cap,
            )
        )
    return table


def job_of(data: dict[str, Any], now: float) -> tuple[wire.JobRecord, JobSpec]:
    spec = spec_from_data({**data, "Tasks": [{"Engine": {"Type": "noop"}}]})
    job = wire.JobRecord(
        id="j-1",
        name="j-1",
        namespace="default",
        type=spec.type,
        spec=msgspec.Raw(json.dumps(spec.dump()).encode()),
        created_at=now,
        updated_at=now,
        state="Running",
    )
    return job, spec


def executions(n: int, state: wire.ComputeState, now: float) -> list[wire.ExecutionRecord]:
    """Execution i on node n{i}, partition i (a daemon's are all partition 0)."""
    desired: wire.DesiredState = "running" if state == "running" else "stopped"
    return [
        wire.ExecutionRecord(
            id=f"e-{i}",
            job_id="j-1",
            namespace="default",
            node_id=f"n{i}",
            job_version=1,
            partition=i,
            attempt=1,
            created_at=now - 100,
            updated_at=now - 100,
            compute_state=state,
            desired_state=desired,
        )
        for i in range(n)
    ]


def evaluations(now: float) -> None:
    """Whole evaluations whose work grows with the job: each shape once per round."""
    nodes = fleet(10_000)
    daemon, daemon_spec = job_of({"Type": "daemon"}, now)
    batch, batch_spec = job_of({"Type": "batch", "Count": 1000}, now)
    service, service_spec = job_of({"Type": "service", "Count": 1000}, now)
    one_joined = executions(10_000, "running", now)[1:]
    restarted = executions(10_000, "lost", now)
    done = executions(1000, "completed", now)
    gone = executions(1000, "lost", now)
    shapes = [
        (
            "daemon, 10,000 nodes, one joins",
            Context(daemon, daemon_spec, one_joined, nodes, now),
            1,
        ),
        (
            "daemon, 10,000 nodes all restarted",
            Context(daemon, daemon_spec, restarted, nodes, now),
            10_000,
        ),
        ("batch of 1,000 partitions, all done", Context(batch, batch_spec, done, nodes, now), 0),
        (
            "service of 1,000 replicas, all lost",
            Context(service, service_spec, gone, nodes, now),
            1000,
        ),
    ]
    for name, ctx, placed in shapes:
        best = float("inf")
        for _ in range(3):
            cpu = time.process_time()
            plan = schedule(ctx)
            best = min(best, time.process_time() - cpu)
            assert len(plan.place) == placed, (name, len(plan.place))
        print(f"schedule() of a {name}: {best * 1e3:8.1f} ms CPU")
    # What the planner does for the joining node alone (Planner.evaluate with `nodes`): pick
    # the job's executions on it out of all of them, look it up, schedule that view.
    best = float("inf")
    for _ in range(3):
        cpu = time.process_time()
        only = frozenset({"n0"})
        mine = [e for e in one_joined if e.node_id in only]
        view = {n: nodes[n] for n in only if n in nodes}
        plan = schedule(Context(daemon, daemon_spec, mine, view, now, scoped=True))
        best = min(best, time.process_time() - cpu)
        assert len(plan.place) == 1, plan
    print(f"the same join, evaluated for the joining node only: {best * 1e3:8.2f} ms CPU")


def main() -> None:
    now = time.time()
    job, spec = job_of({"Type": "batch"}, now)
    job = msgspec.structs.replace(job, state="Pending")
    for k in FLEETS:
        nodes = fleet(k)
        for _ in range(3):
            cpu = time.process_time()
            for _ in range(N):
                plan = schedule(Context(job, spec, [], nodes, now))
            assert len(plan.place) == 1, plan
            per = (time.process_time() - cpu) / N * 1e6
            print(f"schedule() of one batch task on {k:>6} nodes: {per:7.1f} us CPU each")
    evaluations(now)


if __name__ == "__main__":
    main()
