"""The scheduler's own cost of placing one trivial batch task, by fleet size, without NATS:
`schedule()` over the registry's view of K nodes, as the planner calls it per evaluation.

.venv/bin/python -m bench.schedule [N]          # N schedules per fleet size (default 500)
"""

from __future__ import annotations

import json
import sys
import time

import msgspec

from orchestrator.scheduler import Context, schedule
from orchestrator.selection import NodeState, NodeTable
from shared import wire
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


def main() -> None:
    spec = spec_from_data({"Type": "batch", "Tasks": [{"Engine": {"Type": "noop"}}]})
    now = time.time()
    job = wire.JobRecord(
        id="j-1",
        name="j-1",
        namespace="default",
        type="batch",
        spec=msgspec.Raw(json.dumps(spec.dump()).encode()),
        created_at=now,
        updated_at=now,
    )
    for k in FLEETS:
        nodes = fleet(k)
        for _ in range(3):
            cpu = time.process_time()
            for _ in range(N):
                plan = schedule(Context(job, spec, [], nodes, now))
            assert len(plan.place) == 1, plan
            per = (time.process_time() - cpu) / N * 1e6
            print(f"schedule() of one batch task on {k:>6} nodes: {per:7.1f} us CPU each")


if __name__ == "__main__":
    main()
