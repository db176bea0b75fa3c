"""Service jobs on a real nats-server: spread, node loss (a real kill -9), backoff, drain, stop."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from shared.client import ShoalClient
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.helpers_jobs import agent_running, constraint, in_state, noop_job, run_cli
from tests.integration.helpers_longrunning import (
    agent_process,
    forever,
    long_stack,
    node_connection,
    running,
    running_nodes,
    running_on,
)
from tests.integration.stack import FAST


async def test_service_replicas_go_to_distinct_nodes_where_possible(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=3) as s, await s.client() as client:
        web = await client.submit(forever("web", type="service", count=2))
        big = await client.submit(forever("big", type="service", count=4))

        async def replicas(job_id: str, count: int) -> list[str]:
            view = await client.describe(job_id)
            nodes = running_nodes(view.executions)
            return nodes if len(nodes) == count and len(view.executions) == count else []

        nodes = await eventually(lambda: replicas(web, 2), what="2 web replicas")
        assert len(set(nodes)) == 2, nodes
        # More replicas than nodes: every node gets one before any gets a second.
        nodes = await eventually(lambda: replicas(big, 4), what="4 big replicas")
        assert set(nodes) == {"node-0", "node-1", "node-2"}, nodes
        view = await client.describe(big)
        assert view.state == "Running", view
        assert sorted(e.partition for e in view.executions) == [0, 1, 2, 3], view


async def _wait_connected(client: ShoalClient, node_id: str, since: float) -> None:
    async def back() -> bool:
        node = await client.node(node_id)
        return node.connection == "CONNECTED" and node.last_seen > since

    await eventually(back, timeout=15, what=f"{node_id} connected")


async def test_replica_on_a_killed_node_is_replaced_and_never_doubled(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with (
        long_stack(nats_server.url, tmp_path, agents=2) as s,
        await s.client() as client,
        agent_process(nats_server.url, "node-x", tmp_path / "proc") as proc,
    ):
        await eventually(
            lambda: node_connection(client, "node-x", "CONNECTED"), what="node-x registered"
        )
        job_id = await client.submit(forever("api", type="service", count=3))

        async def three_running() -> list[str]:
            view = await client.describe(job_id)
            nodes = running_nodes(view.executions)
            return nodes if len(nodes) == 3 else []

        nodes = await eventually(three_running, what="3 replicas")
        assert nodes == ["node-0", "node-1", "node-x"], f"{nodes}\n{proc.logs()}"
        doomed = await running_on(client, job_id, "node-x")
        assert doomed is not None

        await proc.kill()  # SIGKILL: no goodbye, no final update
        killed = time.monotonic()

        async def replaced() -> list[str]:
            nodes = await three_running()
            return nodes if "node-x" not in nodes else []

        nodes = await eventually(replaced, timeout=15, interval=0.02, what="replica replaced")
        elapsed = time.monotonic() - killed
        print(
            f"\nservice: kill -9 -> replica running elsewhere in {elapsed:.2f}s "
            f"(disconnect timeout {FAST.disconnect_timeout:g}s, heartbeat "
            f"{FAST.heartbeat_interval:g}s)"
        )
        assert elapsed < FAST.disconnect_timeout + 3, elapsed
        assert set(nodes) == {"node-0", "node-1"}, nodes
        execs = {e.id: e for e in await client.executions(job_id)}
        assert execs[doomed.id].compute_state == "lost", execs[doomed.id]
        assert "node-x" in execs[doomed.id].error, execs[doomed.id]
        assert (await client.node("node-x")).connection == "DISCONNECTED"

        # The same node comes back: it runs nothing of this job, and there are still 3.
        restarted = time.time()
        await proc.start()
        await _wait_connected(client, "node-x", restarted)

        async def settled() -> bool:
            view = await client.describe(job_id)
            node = await client.node("node-x")
            return len(running(view.executions)) == 3 and node.running == []

        await eventually(settled, what="3 replicas, none on node-x")
        view = await client.describe(job_id)
        assert len([e for e in view.executions if e.compute_state == "running"]) == 3, view
        assert view.state == "Running", view


async def test_replica_on_a_frozen_node_is_replaced_and_cancelled_when_it_returns(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """SIGSTOP keeps the process (and its execution) alive while it goes silent: when it
    resumes it still runs the replaced replica, which must be cancelled at once."""
    async with (
        long_stack(nats_server.url, tmp_path, agents=2) as s,
        await s.client() as client,
        agent_process(nats_server.url, "node-x", tmp_path / "proc") as proc,
    ):
        await eventually(
            lambda: node_connection(client, "node-x", "CONNECTED"), what="node-x registered"
        )
        job_id = await client.submit(forever("frozen", type="service", count=3))
        stale = await eventually(
            lambda: running_on(client, job_id, "node-x"), what="a replica on node-x"
        )

        async def reported() -> bool:
            return (await client.node("node-x")).running == [stale.id]

        await eventually(reported, what="node-x heartbeat reporting the replica")

        proc.pause()
        paused = time.monotonic()

        async def replaced() -> bool:
            view = await client.describe(job_id)
            nodes = running_nodes(view.executions)
            return len(nodes) == 3 and "node-x" not in nodes

        await eventually(replaced, timeout=15, interval=0.02, what="replica replaced")
        elapsed = time.monotonic() - paused
        print(f"\nservice: SIGSTOP -> replica running elsewhere in {elapsed:.2f}s")

        resumed_at = time.time()
        proc.resume()
        resumed = time.monotonic()
        await _wait_connected(client, "node-x", resumed_at)

        async def stale_gone() -> bool:
            return (await client.node("node-x")).running == []

        await eventually(stale_gone, timeout=10, interval=0.02, what="stale replica cancelled")
        print(f"service: SIGCONT -> stale replica cancelled in {time.monotonic() - resumed:.2f}s")
        assert time.monotonic() - resumed < 5
        view = await client.describe(job_id)
        assert len(running(view.executions)) == 3, view
        execs = {e.id: e for e in await client.executions(job_id)}
        assert execs[stale.id].compute_state == "lost", execs[stale.id]


async def test_failing_replica_is_replaced_with_growing_backoff(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        job_id = await client.submit(
            noop_job("crashloop", type="service", count=1, sleep=0.1, exit_code=1)
        )

        async def attempts(n: int) -> list:
            execs = await client.executions(job_id)
            return execs if len(execs) >= n else []

        execs = await eventually(lambda: attempts(4), timeout=20, what="4 attempts")
        execs = sorted(execs, key=lambda e: e.created_at)[:4]
        assert [e.attempt for e in execs] == [1, 2, 3, 4], execs
        assert all(e.partition == 0 for e in execs), execs
        for e in execs[:3]:
            assert e.compute_state == "failed" and e.exit_code == 1, e
        gaps = [b.created_at - a.created_at for a, b in itertools.pairwise(execs)]
        print(f"\nservice: replacement gaps {', '.join(f'{g:.2f}s' for g in gaps)}")
        # ~1 s, 2 s, 4 s after each exit (plus the 0.1 s run): growing, loosely
        assert 0.8 <= gaps[0] < 3, gaps
        assert gaps[1] > gaps[0] + 0.5, gaps
        assert gaps[2] > gaps[1] + 1, gaps
        view = await client.describe(job_id)
        assert view.state == "Running", view

        await client.stop(job_id)
        for agent in s.agents.values():
            await eventually(lambda a=agent: not agent_running(a), what=f"{agent.node_id} idle")


async def test_drain_moves_replicas_lets_batch_finish_and_undrain_restores(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=3) as s, await s.client() as client:
        web = await client.submit(forever("drained-web", type="service", count=2))

        async def two_replicas() -> list[str]:
            view = await client.describe(web)
            nodes = running_nodes(view.executions)
            return nodes if len(nodes) == 2 else []

        nodes = await eventually(two_replicas, what="2 replicas")
        target = nodes[0]
        moving = await running_on(client, web, target)
        assert moving is not None
        batch = await client.submit(
            noop_job("drained-batch", sleep=2, constraints=[constraint("name", "=", target)])
        )
        await eventually(lambda: running_on(client, batch, target), what="batch running")

        drained = await client.node_action("drain", target)
        assert drained.drain is True

        async def moved() -> list[str]:
            nodes = await two_replicas()
            return nodes if nodes and target not in nodes else []

        nodes = await eventually(moved, timeout=10, what="replica moved off the drained node")
        assert len(set(nodes)) == 2, nodes
        execs = {e.id: e for e in await client.executions(web)}
        assert execs[moving.id].compute_state == "cancelled", execs[moving.id]
        assert "draining" in execs[moving.id].error, execs[moving.id]

        # The batch execution already running there finishes normally.
        view = await client.wait(batch, timeout=15)
        assert view.state == "Completed", view
        assert [(e.node_id, e.compute_state) for e in view.executions] == [(target, "completed")]

        # No new placement on the drained node: a job pinned to it waits, saying why.
        pinned = await client.submit(
            noop_job(
                "pinned",
                sleep=0.2,
                constraints=[constraint("name", "=", target)],
                timeouts={"QueueTimeout": 30},
            )
        )
        view = await eventually(lambda: in_state(client, pinned, "Queued", "Failed", "Completed"))
        assert view.state == "Queued", view
        assert "draining" in view.state_message, view.state_message
        assert not [e for e in view.executions if e.compute_state != "rejected"], view
        assert target not in running_nodes((await client.describe(web)).executions)

        undrained = await client.node_action("undrain", target)
        assert undrained.drain is False
        view = await client.wait(pinned, timeout=15)
        assert view.state == "Completed", view
        assert [e.node_id for e in view.executions if e.compute_state == "completed"] == [target]


async def test_stop_service_cancels_every_replica(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        job_id = await client.submit(forever("stopped-service", type="service", count=2))

        async def both_running() -> bool:
            return len(running((await client.describe(job_id)).executions)) == 2

        await eventually(both_running, what="2 replicas")
        view = await client.stop(job_id, reason="maintenance")
        assert view.state == "Stopped", view

        async def all_cancelled() -> bool:
            execs = await client.executions(job_id)
            return len(execs) == 2 and all(e.compute_state == "cancelled" for e in execs)

        await eventually(all_cancelled, what="every replica cancelled")
        for agent in s.agents.values():
            await eventually(lambda a=agent: not agent_running(a), what=f"{agent.node_id} idle")
        again = await client.stop(job_id)  # stopping a stopped job is not an error
        assert again.state == "Stopped", again
        view = await client.describe(job_id)
        assert view.state == "Stopped" and not running(view.executions), view
        assert len(await client.executions(job_id)) == 2, "nothing was replaced after the stop"


async def test_stop_reason_stays_in_state_message(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        job_id = await client.submit(forever("reasoned-stop", type="service", count=1))
        await eventually(lambda: running_on(client, job_id, "node-0"), what="replica")
        view = await client.stop(job_id, reason="maintenance window")
        assert view.state_message == "maintenance window", view

        async def cancelled() -> bool:  # the stop was evaluated
            execs = await client.executions(job_id)
            return all(e.compute_state == "cancelled" for e in execs)

        await eventually(cancelled, what="replica cancelled")
        await eventually(lambda: not agent_running(s.agents["node-0"]), what="node-0 idle")
        view = await client.describe(job_id)
        assert view.state == "Stopped", view
        assert view.state_message == "maintenance window", view


async def test_cli_run_wait_returns_once_every_replica_runs(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=3) as s, await s.client() as client:
        spec = tmp_path / "service.json"
        spec.write_text(json.dumps(forever("cli-service", type="service", count=3)))
        done = await run_cli(
            "job", "run", str(spec), "--wait", "--wait-timeout", "20", url=nats_server.url
        )
        assert done.code == 0, done
        view = await client.describe("cli-service")
        assert view.state == "Running", view
        assert len(running(view.executions)) == 3, view
        print(f"\nshoal job run --wait (service, Count 3) returned in {done.elapsed:.2f}s")
