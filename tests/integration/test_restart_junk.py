"""A devstack restart (agents stopped, then the orchestrator; the orchestrator started, then the
agents, same names) leaves no execution refused for want of an answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.helpers_longrunning import forever, running_nodes
from tests.integration.stack import Stack


async def test_a_daemon_across_a_devstack_restart_leaves_no_junk(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    s = Stack(nats_server.url, tmp_path)
    try:
        await s.start_orchestrator()
        for i in range(2):
            await s.add_agent(f"node-{i}")
        async with await s.client() as client:
            job_id = await client.submit(forever("d", type="daemon"))

            async def on_both() -> bool:
                v = await client.describe(job_id)
                return running_nodes(v.executions) == ["node-0", "node-1"]

            await eventually(on_both, what="the daemon on both nodes")
            for name in list(s.agents):  # as the devstack stops: agents first
                await s.agents.pop(name).stop()

            async def ended() -> bool:
                v = await client.describe(job_id)
                return not running_nodes(v.executions)

            await eventually(ended, what="the copies ended")
            await s.stop_orchestrator()
            await s.start_orchestrator()
            await asyncio.sleep(1.0)  # the agents take a moment to start (docker probe...)
            for i in range(2):
                await s.add_agent(f"node-{i}")
            await eventually(on_both, what="the daemon back on both nodes")
            states = sorted(e.compute_state for e in (await client.describe(job_id)).executions)
            assert states == ["cancelled", "cancelled", "running", "running"], states
    finally:
        await s.close()
