"""The leader's compaction after a purge (`Orchestrator._compact`) rebuilds its tables in place:
run amid jobs, every table is the same object after it, and jobs placed, copied and settled
through them after it run as before. (That it makes them smaller after a burst is
tests/unit/test_memory.py's and test_evals.py's.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compute.publishers import NatsPublisher
from orchestrator.service import Orchestrator
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.helpers_jobs import noop_job
from tests.integration.stack import stack

NATS_JOB = {
    "Type": "batch",
    "Tasks": [
        {
            "Name": "main",
            "Engine": {"Type": "noop", "Params": {"Stdout": "kept\n"}},
            "Publisher": {"Type": "nats"},
        }
    ],
}


def tables(o: Orchestrator) -> dict[str, Any]:
    """What `_compact` rebuilds, by where it lives (each referred to elsewhere too: the
    registry's `_dirty.add` is the mirror's node-change callback)."""
    mirror, registry, broker = o.mirror, o.registry, o.broker
    handoff = o.updates._results
    return {
        "mirror.jobs": mirror.jobs,
        "mirror.settled": mirror.settled,
        "mirror.ended": mirror.ended,
        "mirror.executions": mirror.executions,
        "mirror.by_job": mirror.by_job,
        "mirror.by_name": mirror.by_name,
        "in_flight.shown": mirror.in_flight._shown,
        "registry.offered": registry._offered,
        "registry.dirty": registry._dirty,
        "broker.queued": broker._queued,
        "handoff.copies": handoff._copies,
    }


async def test_compacting_amid_jobs_keeps_every_table_and_jobs_run_after_it(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        assert s.orchestrator is not None
        orchestrator = s.orchestrator
        for agent in s.agents.values():
            agent.publishers["nats"] = NatsPublisher(agent.bus, agent.node_id)
        before = [await client.submit(noop_job(f"before-{i}", count=2)) for i in range(20)]
        running = await client.submit(noop_job("running", sleep=600))
        for job_id in before:
            assert (await client.wait(job_id, timeout=30)).state == "Completed"
        await eventually(lambda: orchestrator.mirror.executions_of(running), timeout=15)

        held = tables(orchestrator)
        node_change = orchestrator.mirror.on_node_change
        orchestrator._compact()
        after = tables(orchestrator)
        assert all(after[name] is t for name, t in held.items())
        assert orchestrator.mirror.on_node_change == node_change

        # What the tables track still works: placement, result copies, settling, a stop.
        later = [await client.submit(NATS_JOB) for _ in range(5)]
        later.append(await client.submit(noop_job("after", count=3)))
        for job_id in later:
            view = await client.wait(job_id, timeout=30)
            assert view.state == "Completed", view
        await eventually(lambda: all(j in orchestrator.mirror.settled for j in later), timeout=15)
        assert (await client.stop(running)).state == "Stopped"
        await eventually(lambda: running in orchestrator.mirror.settled, timeout=15)
