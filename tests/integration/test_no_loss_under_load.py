"""No execution is lost without a fault: a busy node is not taken for one that forgot its
offers (issue 19), while an offer no orchestrator saw through still is."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from shared import wire
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.stack import stack

# An offer older than this and missing from its node's heartbeat counts as forgotten: short
# here, so that a plan of a few thousand offers outlasts it as a plan of 50,000 outlasts 15 s.
FORGET_AFTER = 0.5


@pytest.mark.slow
async def test_a_large_batch_on_busy_nodes_loses_nothing(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """5,000 noop partitions on 2 nodes, placed in one plan: every offer of it carries the
    plan's start as `created_at`, the tasks end long before their ends are applied, so the
    heartbeats list none of them. None is lost: each was offered, and taken, here."""
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        assert s.orchestrator is not None
        s.orchestrator.registry.forget_after = FORGET_AFTER
        job_id = await client.submit(
            {"Type": "batch", "Count": 5000, "Tasks": [{"Engine": {"Type": "noop"}}]}
        )
        view = await client.wait(job_id, timeout=90)
        executions = await client.executions(job_id)
        states = Counter(e.compute_state for e in executions)
        lost = [e for e in executions if e.compute_state == "lost"]
        assert not lost, (states, Counter(e.error for e in lost))
        assert view.state == "Completed", view.state_message
        assert states == {"completed": 5000}, states


async def test_an_offer_nobody_saw_through_is_still_lost(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Two offers to node-0 its heartbeats never list, equally old: the one made by this
    orchestrator (still reserved: its bid in flight or taken) stays; the other, as if made
    by an orchestrator that died mid-bid, is lost and its job evaluated."""
    spec = {
        "Type": "batch",
        "Tasks": [{"Engine": {"Type": "noop", "Params": {"Sleep": 60}}}],
    }
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        orchestrator = s.orchestrator
        assert orchestrator is not None
        registry = orchestrator.registry
        registry.forget_after = FORGET_AFTER
        job_id = await client.submit(spec)
        await eventually(lambda: s.agents["node-0"].running_count == 1, what="the task running")
        job = orchestrator.mirror.job(job_id)
        assert job is not None
        long_ago = time.time() - 60

        def offer() -> wire.ExecutionRecord:
            return wire.ExecutionRecord(
                id=f"e-{uuid.uuid4()}",
                job_id=job_id,
                namespace=job.namespace,
                node_id="node-0",
                job_version=job.version,
                partition=0,
                attempt=2,
                created_at=long_ago,
                updated_at=long_ago,
            )

        ours, orphan = offer(), offer()
        registry.reserve("node-0", ours.id, wire.Capacity())
        await orchestrator.mirror.create_execution(ours)
        await orchestrator.mirror.create_execution(orphan)

        def state(execution_id: str) -> str:
            known = orchestrator.mirror.executions.get(execution_id)
            assert known is not None
            return known.value.compute_state

        await eventually(lambda: state(orphan.id) == "lost", what="the orphan offer lost")

        def last_heard() -> float:
            live = registry.liveness("node-0")
            assert live is not None
            return live.last_seen

        heard = last_heard()
        # Later heartbeats (each deciding on both offers) leave ours alone.
        await eventually(lambda: last_heard() > heard + 1.0, what="heartbeats after the loss")
        assert state(ours.id) == "offered"
        await client.stop(job_id)
