"""Jobs that queue for one node's capacity all run, one after another, none failed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shared.natsserver import EmbeddedNats
from tests.integration.stack import stack

SPEC = {
    "Type": "batch",
    "Tasks": [{"Engine": {"Type": "noop", "Params": {"Sleep": 0.05}}, "Resources": {"CPU": "1"}}],
}


async def test_jobs_waiting_for_the_only_nodes_room_all_complete(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    # One node with room for one task at a time: each job waits for the one before it. The
    # next one is offered as soon as the last one's end is applied, which may be before the
    # node itself has given the room back: that must not fail the job.
    async with stack(nats_server.url, tmp_path, agents=1, cpu_millis=1000) as s:
        client = await s.client()
        try:
            views = await asyncio.gather(*(client.run(SPEC, timeout=60) for _ in range(8)))
            assert [v.state for v in views] == ["Completed"] * 8, [v.state_message for v in views]
            # The room is held from the offer on, so no job offered it to a node that had none.
            executions = [e for v in views for e in await client.executions(v.id)]
            assert [e.compute_state for e in executions] == ["completed"] * 8, [
                (e.compute_state, e.error) for e in executions
            ]
        finally:
            await client.close()
