"""Removing nodes: `node.remove` (and `shoal node remove`) for a DISCONNECTED node, the leader's
garbage collection of nodes disconnected for `node_gc_after`, and a removed node that comes back."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import msgspec
import pytest

from orchestrator.service import Orchestrator
from shared import subjects, wire
from shared.bus import Bus
from shared.client import ShoalClient
from shared.errors import Conflict, NotFound
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.helpers_jobs import constraint, noop_job, run_cli
from tests.integration.helpers_longrunning import node_connection
from tests.integration.stack import FAST, Stack, leading, stack
from tests.kv_doubles import StandIn, ThroughBus


async def remove(client: ShoalClient, node_id: str) -> wire.NodeView:
    return await client._call("node.remove", wire.NodeRef(node_id=node_id), wire.NodeView)


async def node_ids(client: ShoalClient) -> list[str]:
    return sorted(n.id for n in await client.nodes())


async def disconnected(client: ShoalClient, node_id: str) -> bool:
    return await node_connection(client, node_id, "DISCONNECTED")


async def test_a_disconnected_node_is_removed_its_executions_stay_lost_and_it_can_come_back(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        only_node_1 = [constraint("name", "=", "node-1")]
        waits = {"QueueTimeout": 120}  # for node-1 to come back
        job_id = await client.submit(
            noop_job("on-node-1", sleep="forever", constraints=only_node_1, timeouts=waits)
        )

        async def states(*wanted: str) -> bool:
            view = await client.describe(job_id)
            return [e.compute_state for e in view.executions] == list(wanted)

        await eventually(lambda: states("running"), what="the job running on node-1")
        await s.kill_agent("node-1")
        await eventually(lambda: disconnected(client, "node-1"), what="node-1 disconnected")

        async def lost() -> list[wire.ExecutionView]:
            execs = (await client.describe(job_id)).executions
            return execs if execs and execs[0].compute_state == "lost" else []

        # Marked lost when the node was (not by the removal), and stays so after it.
        before = await eventually(lost, what="the execution on node-1 marked lost")

        with pytest.raises(Conflict, match="stop its agent first"):
            await remove(client, "node-0")
        with pytest.raises(NotFound, match="full node id: node-0, node-1"):
            await remove(client, "node-")
        view = await remove(client, "node-1")
        assert view.id == "node-1" and view.connection == "DISCONNECTED", view
        assert view.last_seen > 0, view  # when it was last heard of
        assert await node_ids(client) == ["node-0"]
        with pytest.raises(NotFound):
            await client.node("node-1")
        with pytest.raises(NotFound, match="no node 'node-1'"):
            await remove(client, "node-1")  # again: nothing more to do
        assert (await client.describe(job_id)).executions[0] == before[0]

        await s.add_agent("node-1")  # the same name: it registers again, afresh
        assert await node_ids(client) == ["node-0", "node-1"]
        assert (await client.node("node-1")).connection == "CONNECTED"
        await eventually(lambda: states("lost", "running"), what="the job on node-1 again")


async def test_shoal_node_remove(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        await s.kill_agent("node-1")
        await eventually(lambda: disconnected(client, "node-1"), what="node-1 disconnected")
        connected, removed_json = await asyncio.gather(
            run_cli("node", "remove", "node-0", url=nats_server.url),
            run_cli("node", "remove", "node-1", "-o", "json", url=nats_server.url),
        )
        assert connected.code == 1, connected
        assert "node node-0 is CONNECTED: stop its agent first" in connected.stderr, connected
        assert "shoal node drain node-0" in connected.stderr, connected
        assert removed_json.code == 0, removed_json
        assert json.loads(removed_json.stdout)["ID"] == "node-1", removed_json
        again = await run_cli("node", "remove", "node-1", url=nats_server.url)
        assert again.code == 1 and "no node 'node-1'" in again.stderr, again
        assert await node_ids(client) == ["node-0"]


async def test_failure_messages_stop_naming_a_removed_node(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        await s.kill_agent("node-1")
        await eventually(lambda: disconnected(client, "node-1"), what="node-1 disconnected")
        impossible = noop_job("impossible", constraints=[constraint("zone", "=", "mars")])
        before = await client.run(dict(impossible, Name="impossible-before"), timeout=15)
        assert before.state == "Failed" and "node-1" in before.state_message, before
        await remove(client, "node-1")
        after = await client.run(dict(impossible, Name="impossible-after"), timeout=15)
        assert after.state == "Failed" and "node-1" not in after.state_message, after


async def test_the_leader_removes_nodes_disconnected_for_node_gc_after_but_not_rejected_ones(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    s = Stack(nats_server.url, tmp_path)
    try:
        await s.start_orchestrator(dataclasses.replace(FAST, node_gc_after=2.0))
        for name in ("keep", "rejected", "gone"):
            await s.add_agent(name)
        async with await s.client() as client:
            await client.node_action("reject", "rejected")
            await s.kill_agent("rejected")
            await s.kill_agent("gone")
            await eventually(lambda: disconnected(client, "gone"), what="gone disconnected")
            assert (await client.node("rejected")).connection == "DISCONNECTED"

            async def collected() -> bool:
                return await node_ids(client) == ["keep", "rejected"]

            # Disconnected longer than node_gc_after (FAST: 1.5 s of silence, then 2 s).
            await eventually(collected, timeout=10, what="node 'gone' collected")
            # Rejected went silent first and stays: time must not undo a rejection.
            assert (await client.node("rejected")).approval == "REJECTED"
            await s.add_agent("gone")
            assert await node_ids(client) == ["gone", "keep", "rejected"]
    finally:
        await s.close()


class HelloDuringDelete(StandIn):
    """Before a delete of `key` reaches the bucket, a hello at another orchestrator stores
    the node CONNECTED again: the delete's compare-and-swap loses."""

    def __init__(self) -> None:
        self.key = ""

    async def delete(self, key: str, revision: int | None = None) -> None:
        if key == self.key:
            self.key = ""
            entry = await self.inner.get(key)
            assert entry is not None and entry.value is not None
            record = wire.decode(entry.value, wire.NodeRecord)
            back = msgspec.structs.replace(record, connection="CONNECTED", message="back")
            await self.inner.update(key, wire.encode(back), entry.revision)
        await self.inner.delete(key, revision)


async def test_a_node_back_while_it_is_removed_is_kept(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    nodes = HelloDuringDelete()
    s = Stack(nats_server.url, tmp_path)
    try:
        bus = await Bus.connect(nats_server.url, name="orchestrator")
        s._buses.append(bus)
        orchestrator = Orchestrator(
            bus, FAST, buckets=ThroughBus(bus, {subjects.NODES_BUCKET: nodes})
        )
        s.orchestrator = orchestrator
        await orchestrator.start()
        await leading(orchestrator)
        await s.add_agent("node-0")
        async with await s.client() as client:
            await s.kill_agent("node-0")
            await eventually(lambda: disconnected(client, "node-0"), what="node-0 disconnected")
            nodes.key = "node-0"
            with pytest.raises(Conflict, match="node node-0 is CONNECTED"):
                await remove(client, "node-0")
            assert not nodes.key  # the race did happen
            stored = await (await bus.kv(subjects.NODES_BUCKET)).get("node-0")
            assert stored is not None and stored.value is not None
            assert wire.decode(stored.value, wire.NodeRecord).message == "back"
    finally:
        await s.close()
