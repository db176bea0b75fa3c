"""Failures of the control plane: lost nodes, restarted agents, a SIGKILLed orchestrator,
and malformed messages. Real nats-server, real agents, noop engine."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from orchestrator.registry import UNKNOWN_GRACE
from shared import subjects, wire
from shared.bus import Bus
from shared.client import ShoalClient
from shared.errors import InvalidSpec, NotFound
from shared.natsserver import EmbeddedNats
from shared.spec import spec_from_data
from tests.conftest import eventually
from tests.integration.helpers_jobs import (
    OrchestratorProcess,
    _BlackHole,
    agent_running,
    api_ready,
    constraint,
    crash_agent,
    noop_job,
    pause_heartbeats,
    resume_heartbeats,
    running_on_agent,
    settle_orphans,
)
from tests.integration.stack import Stack, stack

# ---- lost nodes -----------------------------------------------------------------------------


async def _node_connection(client: ShoalClient, node_id: str) -> str:
    for node in await client.nodes():
        if node.id == node_id:
            return node.connection
    return "UNKNOWN"


async def test_node_list_shows_connected_nodes_with_labels(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        await s.add_agent("labelled", labels={"zone": "eu-1"})
        nodes = {n.id: n for n in await client.nodes()}
        assert set(nodes) == {"node-0", "node-1", "labelled"}
        for node_id, node in nodes.items():
            assert node.connection == "CONNECTED", node
            assert node.approval == "APPROVED", node
            assert node.labels["name"] == node_id
            assert node.labels["os_type"] and node.labels["os_arch"], node.labels
            assert {"noop", "wasm"} <= set(node.engines), node.engines
            assert node.capacity.cpu_millis > 0 and node.capacity.memory_bytes > 0
        assert nodes["labelled"].labels["zone"] == "eu-1"
        assert (await client.node("labelled")).labels["zone"] == "eu-1"


async def test_lost_node_is_disconnected_and_its_execution_retried_elsewhere(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        job_id = await client.submit(noop_job("survives-node-loss", sleep=3, stdout="done\n"))
        view = await eventually(lambda: running_on_agent(client, job_id), what="running")
        first = view.executions[0]
        other = ({"node-0", "node-1"} - {first.node_id}).pop()

        killed = time.monotonic()
        await crash_agent(s, first.node_id)
        await eventually(
            lambda: _is(client, first.node_id, "DISCONNECTED"),
            timeout=6,
            interval=0.1,
            what=f"{first.node_id} DISCONNECTED",
        )
        # disconnect timeout 1.5 s plus one sweep; generous for slow machines
        assert time.monotonic() - killed < 5
        assert await _node_connection(client, other) == "CONNECTED"

        view = await client.wait(job_id, timeout=20)
        assert view.state == "Completed", view
        by_id = {e.id: e for e in view.executions}
        assert by_id[first.id].compute_state in ("lost", "failed"), view
        done = [e for e in view.executions if e.compute_state == "completed"]
        assert [e.node_id for e in done] == [other], view
        assert done[0].attempt == 2


async def test_kill_agent_returns_promptly_with_a_running_execution(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        job_id = await client.submit(noop_job("kill-while-running", sleep="forever"))
        await eventually(lambda: running_on_agent(client, job_id), what="running")
        agent = s.agents["node-0"]
        try:
            async with asyncio.timeout(3):
                await s.kill_agent("node-0")
        except TimeoutError:
            # Unwedge it so the test ends cleanly: let the endless report go nowhere.
            agent.bus = _BlackHole()  # type: ignore[assignment]
            async with asyncio.timeout(10):
                await agent.stop()
            await settle_orphans()
            raise AssertionError(
                "kill_agent did not return within 3 s: ComputeAgent.stop() waits for a "
                "final report that can never be published on a closed connection"
            ) from None
        assert agent_running(agent) == set()


async def _is(client: ShoalClient, node_id: str, connection: str) -> bool:
    return await _node_connection(client, node_id) == connection


async def test_agent_restarted_with_same_name_gets_its_work_retried(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        job_id = await client.submit(noop_job("survives-restart", sleep=4, stdout="done\n"))
        view = await eventually(lambda: running_on_agent(client, job_id), what="running")
        first = view.executions[0]
        assert first.node_id == "node-0"

        await crash_agent(s, "node-0")
        reborn = await s.add_agent("node-0")  # same name, new process (new boot id)
        assert agent_running(reborn) == set()

        lost = await eventually(
            lambda: _execution_state(client, job_id, first.id, "lost", "failed"),
            timeout=5,
            what="the cut-off execution to be marked lost",
        )
        assert lost.error, lost
        view = await client.wait(job_id, timeout=20)
        assert view.state == "Completed", view
        done = [e for e in view.executions if e.compute_state == "completed"]
        assert len(done) == 1 and done[0].id != first.id and done[0].node_id == "node-0", view
        assert done[0].attempt == 2


async def _execution_state(
    client: ShoalClient, job_id: str, execution_id: str, *wanted: str
) -> wire.ExecutionView | None:
    for e in await client.executions(job_id):
        if e.id == execution_id and e.compute_state in wanted:
            return e
    return None


async def test_partitioned_node_rejoins_and_its_stale_execution_is_cancelled(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """No job runs on more than Count nodes for longer than one reconcile."""
    async with stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        job_id = await client.submit(noop_job("partitioned", sleep="forever"))
        view = await eventually(lambda: running_on_agent(client, job_id), what="running")
        first = view.executions[0]
        cut_off = s.agents[first.node_id]
        other = s.agents[({"node-0", "node-1"} - {first.node_id}).pop()]

        await pause_heartbeats(cut_off)
        await eventually(
            lambda: _is(client, first.node_id, "DISCONNECTED"), timeout=6, what="disconnected"
        )
        await eventually(lambda: agent_running(other), timeout=10, what="replacement running")
        assert agent_running(cut_off) == {first.id}, "the partitioned node still runs it"

        resume_heartbeats(cut_off)
        await eventually(
            lambda: _is(client, first.node_id, "CONNECTED"), timeout=6, what="reconnected"
        )
        await eventually(
            lambda: not agent_running(cut_off), timeout=5, what="stale execution cancelled"
        )
        view = await client.describe(job_id)
        live = [e for e in view.executions if e.compute_state in ("accepted", "running")]
        assert [e.node_id for e in live] == [other.node_id], view
        assert {e.id: e for e in view.executions}[first.id].compute_state == "lost", view
        await client.stop(job_id)


async def test_execution_unknown_to_the_orchestrator_is_cancelled(
    nats_server: EmbeddedNats, tmp_path: Path, bus: Bus
) -> None:
    """A node running something nobody wants (a lost command, a stale restart) converges,
    once the execution has stayed unknown for the registry's grace (the mirror may trail)."""
    async with stack(nats_server.url, tmp_path, agents=1) as s:
        agent = s.agents["node-0"]
        spec = spec_from_data(noop_job("rogue", sleep="forever"))
        order = wire.ExecutionOrder(
            execution_id="e-rogue",
            job_id="j-rogue",
            job_type="batch",
            spec=msgspec.Raw(json.dumps(spec.dump()).encode()),
        )
        raw = await bus.request(
            subjects.compute_cmd("node-0"), wire.encode(wire.RunCommand(order=order)), timeout=5
        )
        assert wire.decode(raw, wire.CommandAck).ok
        assert agent_running(agent) == {"e-rogue"}
        await eventually(
            lambda: not agent_running(agent),
            timeout=UNKNOWN_GRACE + 5,
            what="heartbeat reconcile to cancel it",
        )


# ---- orchestrator crash ---------------------------------------------------------------------


async def test_orchestrator_sigkill_mid_queue_loses_no_job(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    s = Stack(nats_server.url, tmp_path)
    first = OrchestratorProcess(nats_server.url, tmp_path / "logs", name="first")
    second = OrchestratorProcess(nats_server.url, tmp_path / "logs", name="second")
    client = await ShoalClient.connect(nats_server.url, timeout=3.0)
    try:
        await first.start()
        await eventually(lambda: api_ready(client), timeout=20, what="first orchestrator")
        for i in range(3):
            await s.add_agent(f"node-{i}")

        count = 2
        job_ids = [
            await client.submit(noop_job(f"crash-{i}", count=count, sleep=0.5, stdout="ok\n"))
            for i in range(10)
        ]
        queued = await client.submit(
            noop_job(
                "crash-queued",
                constraints=[constraint("gpu-type", "=", "a100")],
                timeouts={"QueueTimeout": 60},
            )
        )
        await first.kill()

        await second.start()
        await eventually(lambda: api_ready(client), timeout=20, what="second orchestrator")
        await s.add_agent("gpu-1", labels={"gpu-type": "a100"})

        for job_id in [*job_ids, queued]:
            try:
                view = await client.wait(job_id, timeout=30)
            except TimeoutError:
                view = await client.describe(job_id)
                pytest.fail(f"{job_id} never ended: {view}\n{second.logs()[-3000:]}")
            assert view.state == "Completed", view
        for job_id in job_ids:
            executions = await client.executions(job_id)
            completed = Counter(e.partition for e in executions if e.compute_state == "completed")
            assert completed == Counter(range(count)), (job_id, executions)
        executions = await client.executions(queued)
        assert [e.node_id for e in executions if e.compute_state == "completed"] == ["gpu-1"]
    finally:
        await client.close()
        await s.close()
        await first.stop()
        await second.stop()


async def test_node_lost_while_the_orchestrator_was_down(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """A new orchestrator gives known nodes one timeout to check in, then replaces their work."""
    s = Stack(nats_server.url, tmp_path)
    first = OrchestratorProcess(nats_server.url, tmp_path / "logs", name="first")
    second = OrchestratorProcess(nats_server.url, tmp_path / "logs", name="second")
    client = await ShoalClient.connect(nats_server.url, timeout=3.0)
    try:
        await first.start()
        await eventually(lambda: api_ready(client), timeout=20, what="first orchestrator")
        await s.add_agent("node-0")
        await s.add_agent("node-1")
        job_id = await client.submit(noop_job("orphaned", sleep=3, stdout="done\n"))
        view = await eventually(lambda: running_on_agent(client, job_id), what="running")
        doomed = view.executions[0]

        await first.kill()
        await crash_agent(s, doomed.node_id)
        await second.start()
        await eventually(lambda: api_ready(client), timeout=20, what="second orchestrator")

        await eventually(
            lambda: _is(client, doomed.node_id, "DISCONNECTED"),
            timeout=10,
            what=f"{doomed.node_id} DISCONNECTED after the restart",
        )
        try:
            view = await client.wait(job_id, timeout=20)
        except TimeoutError:
            pytest.fail(f"{await client.describe(job_id)}\n{second.logs()[-3000:]}")
        assert view.state == "Completed", view
        by_id = {e.id: e for e in view.executions}
        assert by_id[doomed.id].compute_state == "lost", view
        done = [e for e in view.executions if e.compute_state == "completed"]
        assert len(done) == 1 and done[0].node_id != doomed.node_id, view
    finally:
        await client.close()
        await s.close()
        await first.stop()
        await second.stop()


# ---- malformed messages ---------------------------------------------------------------------


async def _api_error(bus: Bus, verb: str, payload: bytes) -> wire.ApiError:
    raw = await bus.request(subjects.api(verb), payload, timeout=5)
    reply = wire.decode(raw, wire.ApiReply)
    assert not reply.ok, reply
    assert reply.error is not None
    return reply.error


async def test_malformed_messages_are_refused_or_ignored(
    nats_server: EmbeddedNats, tmp_path: Path, bus: Bus
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        # Request-reply API: an error answer, never silence.
        err = await _api_error(bus, "job.submit", b"\x00\xffnot json at all")
        assert err.code == "invalid", err
        err = await _api_error(bus, "job.submit", b'{"Spec": 42}')
        assert err.code == "invalid", err
        err = await _api_error(bus, "job.submit", b'{"SpecText": "Type: [unclosed"}')
        assert err.code == "invalid", err
        err = await _api_error(bus, "job.describe", b"{}")
        assert err.code == "invalid", err
        err = await _api_error(bus, "job.frobnicate", b"{}")
        assert err.code == "not_found", err

        # Registration: garbage and a hello naming another node are refused.
        raw = await bus.request(subjects.node_hello("x"), b"garbage", timeout=5)
        reply = wire.decode(raw, wire.ApiReply)
        assert not reply.ok and reply.error is not None, reply
        forged = wire.Hello(node=wire.NodeInfo(id="someone-else", engines=["noop"]))
        raw = await bus.request(subjects.node_hello("x"), wire.encode(forged), timeout=5)
        reply = wire.decode(raw, wire.ApiReply)
        assert not reply.ok and reply.error is not None, reply

        # Fire-and-forget and durable subjects: ignored (and dropped from the stream).
        await bus.publish(subjects.node_heartbeat("x"), b"garbage")
        await bus.publish(subjects.node_heartbeat("node-0"), b'{"NodeId": 7}')
        await bus.js_publish(subjects.node_update("x"), b"garbage")
        update = wire.ExecutionUpdate(
            execution_id="e-nope", job_id="j-nope", node_id="node-0", state="completed"
        )
        await bus.js_publish(subjects.node_update("x"), wire.encode(update))  # wrong node
        await bus.js_publish(subjects.node_update("node-0"), wire.encode(update))  # unknown

        # Garbage to an agent's bid and command subjects is answered with a refusal.
        raw = await bus.request(subjects.compute_bid("node-0"), b"garbage", timeout=5)
        assert not wire.decode(raw, wire.BidReply).accepted
        raw = await bus.request(subjects.compute_cmd("node-0"), b"garbage", timeout=5)
        assert not wire.decode(raw, wire.CommandAck).ok

        # The orchestrator still serves: a normal job runs, no phantom node, node-0 healthy.
        job_id = await client.submit(noop_job("after-garbage", stdout="still here\n"))
        view = await client.wait(job_id, timeout=15)
        assert view.state == "Completed", view
        nodes = {n.id: n for n in await client.nodes()}
        assert set(nodes) == {"node-0"}, nodes
        assert nodes["node-0"].connection == "CONNECTED"
        with pytest.raises(NotFound):
            await client.node("x")
        assert s.orchestrator is not None
        assert s.orchestrator._children.running, "a child task of the orchestrator died"

        # The bad updates were consumed (acked or terminated), not left to be redelivered.
        async def updates_drained() -> bool:
            info = await bus._js.stream_info(subjects.UPDATES_STREAM)  # type: ignore[attr-defined]
            return info.state.messages == 0

        await eventually(updates_drained, timeout=10, what="SHOAL_UPDATES to drain")


async def test_invalid_spec_reports_every_problem(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        bad = noop_job("bad-spec", count=1)
        bad["Tasks"][0]["Resources"] = {"Memory": "1Zb", "CPU": "lots"}
        with pytest.raises(InvalidSpec) as caught:
            await client.submit(bad)
        text = str(caught.value)
        assert "Memory" in text and "CPU" in text, text
        assert await client.jobs() == []
        job_id = await client.submit(noop_job("good-spec"))
        assert (await client.wait(job_id, timeout=10)).state == "Completed"


async def test_a_crashed_scheduling_part_hands_the_lease_back_and_scheduling_resumes(
    nats_server: EmbeddedNats, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug that kills a scheduling task must not leave a leader that schedules nothing."""
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        orch = s.orchestrator
        assert orch is not None and orch.leading
        crashed = orch._leading  # the supervisor of the scheduling tasks

        async def bug() -> None:
            raise RuntimeError("injected scheduling bug")

        crashed.spawn(bug(), name="injected-bug")
        await eventually(lambda: not crashed.running, what="the scheduling group ends")
        # The lease comes back (to this orchestrator, the only one) with a fresh group.
        await eventually(lambda: orch.leading and orch._leading is not crashed, timeout=15)
        view = await client.wait(await client.submit(noop_job("after-crash")), timeout=15)
        assert view.state == "Completed", view
        assert "handing the lease back" in caplog.text
