"""Placement, queueing, timeouts, retries, bids and stop, on a real nats-server with real agents."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from compute.inputs import AllowedPath
from shared import wire
from shared.client import ShoalClient
from shared.errors import Conflict, NotFound
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.corpus import corpus_text, fixture_text
from tests.integration.helpers_jobs import (
    agent_running,
    consistently,
    constraint,
    in_state,
    noop_job,
    running_on_agent,
    states,
)
from tests.integration.stack import stack

GIB = 1024**3

# ---- queueing and immediate failures ---------------------------------------------------------


async def test_queued_job_is_placed_when_a_fitting_node_joins(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        spec = noop_job(
            "queued-gpu",
            constraints=[constraint("gpu-type", "=", "a100")],
            timeouts={"QueueTimeout": 60},
            stdout="ran on the a100 node\n",
        )
        job_id = await client.submit(spec)
        view = await eventually(
            lambda: in_state(client, job_id, "Queued", "Failed", "Completed"), what="Queued"
        )
        assert view.state == "Queued", view
        assert "gpu-type" in view.state_message, view.state_message
        assert "a100" in view.state_message, view.state_message
        assert not [e for e in view.executions if e.compute_state != "rejected"], view

        joined = time.monotonic()
        await s.add_agent("gpu-1", labels={"gpu-type": "a100"})
        view = await client.wait(job_id, timeout=15)
        assert view.state == "Completed", view
        assert time.monotonic() - joined < 5, "placement should follow the join at once"
        done = [e for e in view.executions if e.compute_state == "completed"]
        assert [e.node_id for e in done] == ["gpu-1"], view
        out = b"".join([line.data async for line in client.logs(job_id)])
        assert b"ran on the a100 node" in out


async def test_unsatisfiable_constraint_without_queue_timeout_fails_at_once(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        started = time.monotonic()
        job_id = await client.submit(
            noop_job("no-gpu", constraints=[constraint("gpu-type", "=", "a100")])
        )
        view = await client.wait(job_id, timeout=10)
        assert time.monotonic() - started < 5
        assert view.state == "Failed", view
        assert "gpu-type" in view.state_message, view.state_message
        assert "not enough nodes to run job" in view.state_message, view.state_message
        assert view.executions == [], view


@pytest.mark.parametrize(
    ("origin", "name", "engine"),
    [
        ("fixture", "unknown-engine.yaml", "hovercraft"),
        ("corpus", "unsupported_engine_type.yml", "vroomvroom"),
    ],
    ids=["fixture", "corpus"],
)
async def test_unknown_engine_fails_with_reason(
    nats_server: EmbeddedNats, tmp_path: Path, origin: str, name: str, engine: str
) -> None:
    spec_text = fixture_text(name) if origin == "fixture" else corpus_text(name)
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(spec_text)
        view = await client.wait(job_id, timeout=10)
        assert view.state == "Failed", view
        assert f"does not support engine {engine}" in view.state_message, view.state_message
        assert "not enough nodes to run job" in view.state_message, view.state_message
        assert view.executions == []


async def test_queue_timeout_expires_with_reason(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        started = time.monotonic()
        job_id = await client.submit(
            noop_job(
                "queue-expires",
                constraints=[constraint("gpu-type", "=", "a100")],
                timeouts={"QueueTimeout": 1},
            )
        )
        view = await client.wait(job_id, timeout=10)
        assert view.state == "Failed", view
        assert 1 <= time.monotonic() - started < 5
        assert "QueueTimeout" in view.state_message, view.state_message
        assert "gpu-type" in view.state_message, view.state_message
        events = await client.history(job_id)
        assert [e.state for e in events if e.kind == "job"] == ["Pending", "Queued", "Failed"]


async def test_memory_ask_larger_than_any_node_fails(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with (
        stack(nats_server.url, tmp_path, memory_bytes=2 * GIB) as s,
        await s.client() as client,
    ):
        job_id = await client.submit(noop_job("too-big", resources={"Memory": "64Gi"}))
        view = await client.wait(job_id, timeout=10)
        assert view.state == "Failed", view
        assert "memory" in view.state_message.lower(), view.state_message
        assert view.executions == []


async def test_node_too_small_for_the_ask_is_filtered_out(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """The orchestrator filter never offers the job to a node whose capacity is too small."""
    async with stack(nats_server.url, tmp_path, agents=0) as s, await s.client() as client:
        await s.add_agent("small", memory_bytes=256 * 1024**2)
        await s.add_agent("big", memory_bytes=4 * GIB)
        job_id = await client.submit(noop_job("fits-big", count=2, resources={"Memory": "1Gi"}))
        view = await client.wait(job_id, timeout=15)
        assert view.state == "Completed", view
        assert {e.node_id for e in view.executions} == {"big"}, view
        assert states(view) == ["completed", "completed"]

        # Only the small node left: nothing fits, and the reason says why.
        await s.kill_agent("big")
        await eventually(
            lambda: _connection(client, "big", "DISCONNECTED"), timeout=10, what="big lost"
        )
        job_id = await client.submit(noop_job("fits-none", resources={"Memory": "1Gi"}))
        view = await client.wait(job_id, timeout=10)
        assert view.state == "Failed", view
        assert "small" in view.state_message and "memory" in view.state_message, view
        assert view.executions == []


async def _connection(client: ShoalClient, node_id: str, wanted: str) -> bool:
    nodes = {n.id: n for n in await client.nodes()}
    return node_id in nodes and nodes[node_id].connection == wanted


# ---- retries and timeouts -------------------------------------------------------------------


async def test_failing_job_is_retried_on_distinct_nodes_then_fails(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=3) as s, await s.client() as client:
        job_id = await client.submit(noop_job("exit-3", exit_code=3, stdout="try\n"))
        view = await client.wait(job_id, timeout=20)
        assert view.state == "Failed", view
        assert "exit code 3" in view.state_message, view.state_message
        assert "3 attempts" in view.state_message, view.state_message
        assert len(view.executions) == 3, view
        assert [e.attempt for e in view.executions] == [1, 2, 3]
        assert all(e.compute_state == "failed" and e.exit_code == 3 for e in view.executions)
        assert len({e.node_id for e in view.executions}) == 3, "each attempt on another node"

        events = await client.history(job_id)
        failed = {e.execution_id for e in events if e.kind == "execution" and e.state == "failed"}
        placed = {e.execution_id for e in events if e.kind == "execution" and "placed" in e.message}
        assert failed == placed == {e.id for e in view.executions}, events
        job_states = [e.state for e in events if e.kind == "job"]
        assert job_states[-1] == "Failed", job_states
        assert "Running" in job_states, job_states


async def test_execution_timeout_fails_attempts_and_retries(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        started = time.monotonic()
        job_id = await client.submit(
            noop_job("exec-timeout", sleep=30, timeouts={"ExecutionTimeout": 1})
        )
        view = await client.wait(job_id, timeout=25)
        elapsed = time.monotonic() - started
        assert view.state == "Failed", view
        assert len(view.executions) == 3, view
        for e in view.executions:
            assert e.compute_state == "failed", e
            assert "timed out" in e.error, e
        assert "timed out" in view.state_message, view.state_message
        # 3 attempts of ~1 s plus backoff 1 s and 2 s: far from the 30 s sleep.
        assert elapsed < 15, elapsed
        for agent in s.agents.values():
            assert agent_running(agent) == set()


async def test_total_timeout_fails_job_and_cancels_execution(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        started = time.monotonic()
        job_id = await client.submit(
            noop_job("total-timeout", sleep=30, timeouts={"TotalTimeout": 2})
        )
        await eventually(lambda: running_on_agent(client, job_id), what="running")
        assert any(agent_running(a) for a in s.agents.values())
        view = await client.wait(job_id, timeout=10)
        assert time.monotonic() - started < 6
        assert view.state == "Failed", view
        assert "TotalTimeout" in view.state_message, view.state_message
        await eventually(
            lambda: all(not agent_running(a) for a in s.agents.values()),
            timeout=5,
            what="agents to drop the execution",
        )
        final = await eventually(
            lambda: _all_ended(client, job_id), timeout=5, what="execution ended"
        )
        assert [e.compute_state for e in final.executions] == ["cancelled"], final


async def _all_ended(client: ShoalClient, job_id: str) -> wire.JobView | None:
    """The job's view once it has executions and none is live any more."""
    view = await client.describe(job_id)
    if view.executions and not any(
        e.compute_state in wire.LIVE_COMPUTE_STATES for e in view.executions
    ):
        return view
    return None


# ---- ops jobs -------------------------------------------------------------------------------


async def test_ops_job_runs_on_every_matching_node(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        await s.add_agent("edge-a", labels={"role": "edge"})
        await s.add_agent("edge-b", labels={"role": "edge"})
        job_id = await client.submit(
            noop_job(
                "ops-edge",
                type="ops",
                count=None,
                constraints=[constraint("role", "=", "edge")],
                stdout="ops ran\n",
            )
        )
        view = await client.wait(job_id, timeout=15)
        assert view.state == "Completed", view
        assert sorted(e.node_id for e in view.executions) == ["edge-a", "edge-b"], view
        assert states(view) == ["completed", "completed"]
        out = b"".join([line.data async for line in client.logs(job_id)])
        assert out.count(b"ops ran") == 2


async def test_ops_job_without_matching_node_fails_at_once(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        started = time.monotonic()
        job_id = await client.submit(
            noop_job(
                "ops-nowhere",
                type="ops",
                count=None,
                constraints=[constraint("role", "=", "edge")],
            )
        )
        view = await client.wait(job_id, timeout=10)
        assert time.monotonic() - started < 5
        assert view.state == "Failed", view
        assert "role" in view.state_message, view.state_message
        assert view.executions == []


async def test_ops_job_failures_are_not_retried(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(noop_job("ops-fails", type="ops", count=None, exit_code=3))
        view = await client.wait(job_id, timeout=15)
        assert view.state == "Failed", view
        assert sorted(e.node_id for e in view.executions) == ["node-0", "node-1"], view
        assert states(view) == ["failed", "failed"], view
        assert "exit code 3" in view.state_message, view.state_message
        assert len(await client.executions(job_id)) == 2, "ops executions are never retried"
        assert all(not agent_running(a) for a in s.agents.values())


async def test_batch_count_larger_than_the_fleet_completes(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(noop_job("wide", count=5, sleep=0.2, stdout="part\n"))
        view = await client.wait(job_id, timeout=15)
        assert view.state == "Completed", view
        assert sorted(e.partition for e in view.executions) == [0, 1, 2, 3, 4], view
        assert {e.node_id for e in view.executions} == set(s.agents), "spread over both nodes"
        out = b"".join([line.data async for line in client.logs(job_id)])
        assert out.count(b"part") == 5


# ---- bids -----------------------------------------------------------------------------------


async def test_node_declines_bid_for_disallowed_local_path(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    async with (
        stack(nats_server.url, tmp_path, agents=1, allow_local_paths=()) as s,
        await s.client() as client,
    ):
        spec = noop_job(
            "local-input",
            inputs=[
                {
                    "Source": {"Type": "localDirectory", "Params": {"SourcePath": str(data)}},
                    "Target": "/data",
                }
            ],
        )
        job_id = await client.submit(spec)
        view = await client.wait(job_id, timeout=15)
        assert view.state == "Failed", view
        assert "declined" in view.state_message, view.state_message
        assert view.executions, view
        for e in view.executions:
            assert e.compute_state == "rejected", e
            assert e.node_id == "node-0"
            assert "allowed" in e.error, e.error
        assert agent_running(s.agents["node-0"]) == set()

        # The same job on a node that allows the directory runs.
        await s.add_agent("trusting", allow_local_paths=(AllowedPath.parse(str(data)),))
        job_id = await client.submit({**spec, "Name": "local-input-ok"})
        view = await client.wait(job_id, timeout=15)
        assert view.state == "Completed", view
        done = [e for e in view.executions if e.compute_state == "completed"]
        assert [e.node_id for e in done] == ["trusting"], view


async def test_ops_job_declined_by_every_node_fails(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        spec = noop_job(
            "ops-local",
            type="ops",
            count=None,
            inputs=[
                {
                    "Source": {"Type": "localDirectory", "Params": {"SourcePath": str(data)}},
                    "Target": "/data",
                }
            ],
        )
        job_id = await client.submit(spec)
        view = await client.wait(job_id, timeout=15)
        assert view.state == "Failed", view
        assert "declined" in view.state_message, view.state_message
        assert "allowed" in view.state_message, view.state_message
        assert sorted(e.node_id for e in view.executions) == sorted(s.agents), view
        assert states(view) == ["rejected", "rejected"], view


async def test_declined_bid_queues_with_reason_until_a_node_accepts(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        spec = noop_job(
            "local-input-queued",
            inputs=[
                {
                    "Source": {"Type": "localDirectory", "Params": {"SourcePath": str(data)}},
                    "Target": "/data",
                }
            ],
            timeouts={"QueueTimeout": 60},
        )
        job_id = await client.submit(spec)
        view = await eventually(
            lambda: in_state(client, job_id, "Queued", "Failed", "Completed"), what="Queued"
        )
        assert view.state == "Queued", view
        assert "declined" in view.state_message, view.state_message
        assert any(e.compute_state == "rejected" for e in view.executions), view
        await s.add_agent("trusting", allow_local_paths=(AllowedPath.parse(str(data)),))
        view = await client.wait(job_id, timeout=15)
        assert view.state == "Completed", view


# ---- stop and id resolution -----------------------------------------------------------------


async def test_stop_cancels_running_execution(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(noop_job("forever", sleep="forever"))
        view = await eventually(lambda: running_on_agent(client, job_id), what="running")
        node = view.executions[0].node_id
        assert agent_running(s.agents[node]) == {view.executions[0].id}

        stopped = await client.stop(job_id, "enough")
        assert stopped.state == "Stopped", stopped
        assert stopped.state_message == "enough"
        await eventually(lambda: not agent_running(s.agents[node]), timeout=5, what="cancel")
        view = await eventually(lambda: _all_ended(client, job_id), timeout=5, what="cancelled")
        assert view.state == "Stopped"
        assert [e.compute_state for e in view.executions] == ["cancelled"], view

        again = await client.stop(job_id)  # already ended: no error, nothing changes
        assert again.state == "Stopped"
        events = await client.history(job_id)
        assert [e.state for e in events if e.kind == "job"].count("Stopped") == 1, events


async def test_stop_reason_is_kept(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        job_id = await client.submit(noop_job("forever-reason", sleep="forever"))
        await eventually(lambda: running_on_agent(client, job_id), what="running")
        stopped = await client.stop(job_id, "enough")
        assert (stopped.state, stopped.state_message) == ("Stopped", "enough")
        await eventually(lambda: _all_ended(client, job_id), timeout=5, what="cancelled")

        async def reason_kept() -> bool:
            view = await client.describe(job_id)
            return (view.state, view.state_message) == ("Stopped", "enough")

        # The evaluation that cancels the execution must not rewrite the job's message.
        await consistently(reason_kept, duration=1.5, what="StateMessage == 'enough'")
        again = await client.stop(job_id, "again")
        assert again.state_message == "enough", "a second stop changes nothing"


async def test_stopped_queued_job_is_never_placed(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        job_id = await client.submit(
            noop_job(
                "queued-then-stopped",
                constraints=[constraint("gpu-type", "=", "a100")],
                timeouts={"QueueTimeout": 60},
            )
        )
        await eventually(lambda: in_state(client, job_id, "Queued"), what="Queued")
        assert (await client.stop(job_id)).state == "Stopped"
        gpu = await s.add_agent("gpu-1", labels={"gpu-type": "a100"})
        # Give the join (which re-evaluates waiting jobs) time to do the wrong thing.
        await consistently(lambda: not agent_running(gpu), duration=1.0, what="gpu-1 idle")
        view = await client.describe(job_id)
        assert view.state == "Stopped", view
        assert view.executions == [], view


async def test_job_id_prefix_resolution(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        first = await client.submit(noop_job("prefix-a"))
        second = await client.submit(noop_job("prefix-b"))
        await client.wait(first, timeout=10)
        await client.wait(second, timeout=10)
        view = await client.describe(first[:10])
        assert view.id == first
        assert (await client.describe("prefix-b")).id == second  # by name

        # "j-" prefixes every job id: ambiguous.
        with pytest.raises(Conflict) as ambiguous:
            await client.describe("j-")
        assert "matches 2 jobs" in str(ambiguous.value)
        with pytest.raises(NotFound) as unknown:
            await client.describe("j-zzzz")
        assert "j-zzzz" in str(unknown.value)
        with pytest.raises(NotFound):
            await client.stop("no-such-job")
