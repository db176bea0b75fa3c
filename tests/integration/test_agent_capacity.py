"""A compute agent's own account of what it has free, bid by bid (against a real nats-server,
bids sent on its subject as the orchestrator sends them)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from compute.agent import AgentConfig, ComputeAgent
from orchestrator.service import OrchestratorConfig, ensure_streams
from shared import subjects, wire
from shared.bus import Bus
from shared.spec.loader import spec_from_data
from tests.conftest import eventually


def order(execution_id: str, *, cpu: str, sleep: float) -> wire.ExecutionOrder:
    spec = spec_from_data(
        {
            "Name": execution_id,
            "Type": "batch",
            "Tasks": [
                {
                    "Engine": {"Type": "noop", "Params": {"Sleep": sleep}},
                    "Resources": {"CPU": cpu},
                }
            ],
        }
    )
    return wire.ExecutionOrder(
        execution_id=execution_id,
        job_id=f"j-{execution_id}",
        job_type="batch",
        spec=msgspec.Raw(json.dumps(spec.dump()).encode()),
    )


async def bid(bus: Bus, node: str, offer: wire.ExecutionOrder) -> wire.BidReply:
    raw = await bus.request(subjects.compute_bid(node), wire.encode(offer))
    return wire.decode(raw, wire.BidReply, what="bid reply")


async def test_capacity_is_taken_while_running_and_given_back_at_the_end(
    bus: Bus, tmp_path: Path
) -> None:
    await ensure_streams(bus, OrchestratorConfig())  # where the agent's reports go
    config = AgentConfig(
        name="small", engines=("noop",), cpu_millis=1000, state_dir=tmp_path / "agent"
    )
    agent = ComputeAgent(bus, config)
    await agent.start()
    try:
        assert (await bid(bus, "small", order("e-1", cpu="600m", sleep=60))).accepted
        assert agent.free().cpu_millis == 400
        refused = await bid(bus, "small", order("e-2", cpu="600m", sleep=0))
        assert not refused.accepted and "not enough free resources" in refused.reason
        assert (await bid(bus, "small", order("e-3", cpu="300m", sleep=0))).accepted
        # e-3 ended at once: its 300m came back, e-1's 600m is still taken
        await eventually(lambda: agent.free().cpu_millis == 400, what="e-3's CPU back")
        agent._cancel("e-1", "test over")
        await eventually(lambda: agent.free().cpu_millis == 1000, what="e-1's CPU back")
        assert (await bid(bus, "small", order("e-4", cpu="1", sleep=0))).accepted
    finally:
        await agent.stop()
