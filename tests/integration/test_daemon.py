"""Daemon jobs on a real nats-server: every matching node, joins, restarts, no-node, stop, CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from pathlib import Path

import pytest

from shared.client import ShoalClient
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.helpers_jobs import agent_running, constraint, noop_job, run_cli
from tests.integration.helpers_longrunning import (
    LongStack,
    forever,
    long_stack,
    running,
    running_nodes,
    running_on,
)
from tests.integration.stack import FAST, Stack

EDGE = constraint("role", "=", "edge")


def recorded_evaluations(s: LongStack) -> list[tuple[str, frozenset[str] | None]]:
    """(job id, the nodes it was evaluated for) of every evaluation from now on."""
    assert s.orchestrator is not None
    planner = s.orchestrator.planner
    seen: list[tuple[str, frozenset[str] | None]] = []
    evaluate = planner.evaluate

    async def recording(job_id: str, nodes: frozenset[str] | None = None) -> None:
        seen.append((job_id, nodes))
        await evaluate(job_id, nodes)

    planner.evaluate = recording  # type: ignore[method-assign]
    return seen


async def test_daemon_runs_on_every_matching_node_and_on_nodes_that_join(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=0) as s, await s.client() as client:
        await s.add_agent("edge-0", labels={"role": "edge"})
        await s.add_agent("edge-1", labels={"role": "edge"})
        await s.add_agent("core-0", labels={"role": "core"})
        job_id = await client.submit(forever("edge-daemon", type="daemon", constraints=[EDGE]))

        async def on_both_edges() -> bool:
            view = await client.describe(job_id)
            return running_nodes(view.executions) == ["edge-0", "edge-1"]

        await eventually(on_both_edges, timeout=10, what="daemon on edge-0 and edge-1")

        # A matching node that joins later gets its copy at once.
        await s.add_agent("edge-2", labels={"role": "edge"})
        joined = time.monotonic()
        await eventually(
            lambda: running_on(client, job_id, "edge-2"),
            timeout=10,
            interval=0.01,
            what="daemon running on edge-2",
        )
        elapsed = time.monotonic() - joined
        print(f"\ndaemon: add_agent returned -> running on the new node in {elapsed * 1000:.0f} ms")
        assert elapsed < 5, f"daemon placement took {elapsed:.2f}s after the node joined"

        # A node that does not match gets nothing (edge-3 joining after it proves the
        # daemon was evaluated since), and the job is Running.
        await s.add_agent("core-1", labels={"role": "core"})
        await s.add_agent("edge-3", labels={"role": "edge"})
        await eventually(lambda: running_on(client, job_id, "edge-3"), what="copy on edge-3")
        view = await client.describe(job_id)
        assert view.state == "Running", view
        assert running_nodes(view.executions) == ["edge-0", "edge-1", "edge-2", "edge-3"], view
        assert not [e for e in view.executions if e.node_id.startswith("core")], view
        assert agent_running(s.agents["core-0"]) == agent_running(s.agents["core-1"]) == set()

        # core-1 restarts with the edge label: it became matching, so it gets a copy at once.
        await s.kill_agent("core-1")
        await s.add_agent("core-1", labels={"role": "edge"})
        rejoined = time.monotonic()
        await eventually(
            lambda: running_on(client, job_id, "core-1"),
            timeout=10,
            interval=0.01,
            what="daemon running on core-1 after it gained the label",
        )
        elapsed = time.monotonic() - rejoined
        print(f"daemon: node became matching -> running in {elapsed * 1000:.0f} ms")
        assert elapsed < 5


async def test_daemon_follows_node_approval(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    manual = dataclasses.replace(FAST, manual_approval=True)
    async with long_stack(nats_server.url, tmp_path, 0, manual) as s, await s.client() as client:
        await s.add_agent("approved-0")
        await client.node_action("approve", "approved-0")
        job_id = await client.submit(forever("approval-daemon", type="daemon"))
        await eventually(lambda: running_on(client, job_id, "approved-0"), what="first copy")

        # A pending node gets nothing until it is approved (approved-2, approved after it,
        # proves the daemon was evaluated since), then its copy at once.
        await s.add_agent("pending-1")
        assert (await client.node("pending-1")).approval == "PENDING"
        await s.add_agent("approved-2")
        await client.node_action("approve", "approved-2")
        await eventually(lambda: running_on(client, job_id, "approved-2"), what="approved-2")
        view = await client.describe(job_id)
        assert running_nodes(view.executions) == ["approved-0", "approved-2"], view
        assert not [e for e in view.executions if e.node_id == "pending-1"], view

        await client.node_action("approve", "pending-1")
        approved = time.monotonic()
        await eventually(
            lambda: running_on(client, job_id, "pending-1"),
            timeout=10,
            interval=0.01,
            what="daemon on pending-1 after approval",
        )
        elapsed = time.monotonic() - approved
        print(f"\ndaemon: approve -> running on the node in {elapsed * 1000:.0f} ms")
        assert elapsed < 5

        # Rejecting a node takes its copy away; the others keep running.
        await client.node_action("reject", "pending-1")
        await eventually(
            lambda: not agent_running(s.agents["pending-1"]), what="copy cancelled on reject"
        )
        view = await client.describe(job_id)
        assert running_nodes(view.executions) == ["approved-0", "approved-2"], view


@pytest.mark.parametrize(
    ("exit_code", "final_state"), [(0, "completed"), (1, "failed")], ids=["exit-0", "exit-1"]
)
async def test_exited_daemon_is_restarted_on_the_same_node_with_backoff(
    nats_server: EmbeddedNats, tmp_path: Path, exit_code: int, final_state: str
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        name = f"flaky-daemon-{exit_code}"
        job_id = await client.submit(
            noop_job(name, type="daemon", count=None, sleep=0.3, exit_code=exit_code)
        )

        async def three_per_node() -> list:
            execs = await client.executions(job_id)
            per_node = {n: [e for e in execs if e.node_id == n] for n in ("node-0", "node-1")}
            return execs if all(len(v) >= 3 for v in per_node.values()) else []

        execs = await eventually(three_per_node, timeout=15, what="3 attempts on each node")
        view = await client.describe(job_id)
        assert view.state == "Running", view

        for node in ("node-0", "node-1"):
            mine = sorted((e for e in execs if e.node_id == node), key=lambda e: e.created_at)
            assert [e.attempt for e in mine[:3]] == [1, 2, 3], mine
            for e in mine[:2]:
                assert e.compute_state == final_state, e
                assert e.exit_code == exit_code, e
            gaps = [b.created_at - a.updated_at for a, b in itertools.pairwise(mine[:3])]
            # backoff 1 s then 2 s after each exit (loosely: growing, and not immediate)
            assert gaps[0] >= 0.7, gaps
            assert gaps[1] > gaps[0] + 0.5, gaps

        events = await client.history(job_id)
        placed = [e for e in events if e.kind == "execution" and e.message.startswith("placed")]
        for node in ("node-0", "node-1"):
            attempts = [e.message for e in placed if e.node_id == node]
            assert any("attempt 2" in m for m in attempts), attempts
            assert any("attempt 3" in m for m in attempts), attempts
        ended = [e for e in events if e.kind == "execution" and e.state == final_state]
        assert len(ended) >= 4, [e.message for e in events]
        assert all(e.execution_id for e in ended)

        await client.stop(job_id)
        for agent in s.agents.values():
            await eventually(lambda a=agent: not agent_running(a), what=f"{agent.node_id} idle")


async def test_daemon_without_a_matching_node_keeps_running_and_says_why(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        job_id = await client.submit(
            forever("gpu-daemon", type="daemon", constraints=[constraint("gpu", "exists")])
        )

        async def explained() -> object:
            view = await client.describe(job_id)
            return view if view.state_message else None

        view = await eventually(explained, timeout=10, what="a StateMessage")
        assert view.state == "Running", view
        assert "no node" in view.state_message, view.state_message
        assert "gpu" in view.state_message, view.state_message
        assert view.executions == [], view

        # Nodes joining re-evaluate it: a non-matching one changes nothing, a matching one
        # gets its copy at once.
        await s.add_agent("cpu-1")
        await s.add_agent("gpu-1", labels={"gpu": "a100"})
        await eventually(lambda: running_on(client, job_id, "gpu-1"), what="copy on gpu-1")
        view = await client.describe(job_id)
        assert view.state == "Running", view
        assert [e.node_id for e in view.executions] == ["gpu-1"], view

        async def message_cleared() -> bool:
            return (await client.describe(job_id)).state_message == ""

        await eventually(message_cleared, what="StateMessage cleared once placed")


async def test_a_join_evaluates_only_the_joining_nodes_part_of_a_running_daemon(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    # On a large fleet a whole evaluation of a daemon job is costly (docs/benchmarks.md), and
    # every join used to evaluate every daemon job whole.
    async with long_stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        seen = recorded_evaluations(s)
        job_id = await client.submit(forever("scoped-daemon", type="daemon"))

        async def settled() -> bool:
            view = await client.describe(job_id)
            return running_nodes(view.executions) == ["node-0", "node-1"] and not view.state_message

        await eventually(settled, what="daemon on both nodes")
        seen.clear()
        await s.add_agent("node-2")
        await eventually(lambda: running_on(client, job_id, "node-2"), what="copy on node-2")
        # Every evaluation its join and its running report triggered has run.
        assert s.orchestrator is not None
        broker = s.orchestrator.broker
        await eventually(lambda: not broker.pending, what="no evaluation left to run")
        mine = [nodes for job, nodes in seen if job == job_id]
        assert mine, seen
        assert all(nodes == frozenset({"node-2"}) for nodes in mine), mine


async def test_a_copy_that_ends_is_restarted_by_evaluations_of_its_node_alone(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        seen = recorded_evaluations(s)
        job_id = await client.submit(noop_job("exiting", type="daemon", count=None, sleep=0.3))

        async def attempts(n: int) -> bool:
            execs = await client.executions(job_id)
            return all(sum(e.node_id == f"node-{i}" for e in execs) >= n for i in range(2))

        async def settled() -> bool:  # evaluated whole until it runs with nothing to say
            view = await client.describe(job_id)
            return view.state == "Running" and not view.state_message and await attempts(1)

        await eventually(settled, what="a copy on each node, the job Running")
        assert s.orchestrator is not None
        broker = s.orchestrator.broker
        await eventually(lambda: not broker.pending, what="the evaluations triggered so far")
        seen.clear()
        await eventually(lambda: attempts(3), timeout=15, what="3 attempts on each node")
        mine = [nodes for job, nodes in seen if job == job_id]
        assert mine, seen
        # (a scope may hold both nodes: their triggers collapsed into one evaluation)
        assert all(nodes is not None for nodes in mine), mine


async def test_a_daemon_whose_last_copy_stops_says_it_has_no_node(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    # The node's change is evaluated for that node alone, which cannot tell whether the job
    # still runs anywhere: a whole evaluation follows a stopped copy.
    manual = dataclasses.replace(FAST, manual_approval=True)
    async with long_stack(nats_server.url, tmp_path, 0, manual) as s, await s.client() as client:
        await s.add_agent("only-0")
        await client.node_action("approve", "only-0")
        job_id = await client.submit(forever("lonely-daemon", type="daemon"))
        await eventually(lambda: running_on(client, job_id, "only-0"), what="its copy")
        await client.node_action("reject", "only-0")

        async def explained() -> object:
            view = await client.describe(job_id)
            return view if "no node" in view.state_message else None

        view = await eventually(explained, what="the job says it has no node")
        assert view.state == "Running", view
        assert not running(view.executions), view


async def test_stop_daemon_cancels_every_copy(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=3) as s, await s.client() as client:
        job_id = await client.submit(forever("stopped-daemon", type="daemon"))

        async def everywhere() -> bool:
            view = await client.describe(job_id)
            return running_nodes(view.executions) == ["node-0", "node-1", "node-2"]

        await eventually(everywhere, what="daemon on all three nodes")
        stopped = await client.stop(job_id)
        assert stopped.state == "Stopped", stopped

        async def all_cancelled() -> bool:
            execs = await client.executions(job_id)
            return bool(execs) and all(e.compute_state == "cancelled" for e in execs)

        await eventually(all_cancelled, what="every execution cancelled")
        for agent in s.agents.values():
            await eventually(lambda a=agent: not agent_running(a), what=f"{agent.node_id} idle")
        again = await client.stop(job_id)  # not an error
        assert again.state == "Stopped", again
        view = await client.describe(job_id)
        assert view.state == "Stopped" and not running(view.executions), view

        # A node joining later does not revive a stopped daemon.
        await s.add_agent("node-3")
        view = await client.describe(job_id)
        assert not [e for e in view.executions if e.node_id == "node-3"], view
        assert not agent_running(s.agents["node-3"])


async def test_cli_run_wait_returns_once_the_daemon_runs_everywhere(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        spec = tmp_path / "daemon.json"
        spec.write_text(json.dumps(forever("cli-daemon", type="daemon")))
        done = await run_cli(
            "job", "run", str(spec), "--wait", "--wait-timeout", "20", url=nats_server.url
        )
        assert done.code == 0, done
        view = await client.describe("cli-daemon")
        assert view.state == "Running", view
        assert running_nodes(view.executions) == ["node-0", "node-1"], view
        print(f"\nshoal job run --wait (daemon) returned in {done.elapsed:.2f}s")


async def test_orchestrator_stop_returns_while_updates_flow(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Agents stopping first (the plain Stack's order) report a burst of updates; the
    orchestrator, stopped right after, must still return. The hang is a race, so try a few
    rounds (each a fresh orchestrator and agents re-running the daemon)."""
    s = Stack(nats_server.url, tmp_path)
    stuck = ""
    try:
        for round_ in range(6):
            await s.start_orchestrator()
            for name in ("node-0", "node-1", "node-2"):
                await s.add_agent(name)
            async with await s.client() as client:
                if round_ == 0:
                    await client.submit(forever("shutdown-daemon", type="daemon"))

                async def everywhere(c: ShoalClient = client) -> bool:
                    view = await c.describe("shutdown-daemon")
                    return len(running(view.executions)) == 3

                await eventually(everywhere, what="daemon on all three nodes")
            for name in list(s.agents):
                await s.agents.pop(name).stop()  # each reports its execution as failed
            stopping = asyncio.create_task(s.stop_orchestrator())
            done, _ = await asyncio.wait([stopping], timeout=3)
            if not done:
                stuck = f"Orchestrator.stop() did not return within 3 s (round {round_ + 1})"
                # Unstick it so the test can end: cancel the loops that swallowed their cancel.
                while not stopping.done():
                    for task in asyncio.all_tasks():
                        if task.cancelling() and task is not asyncio.current_task():
                            task.cancel()
                    await asyncio.wait([stopping], timeout=1)
                break
        assert not stuck, stuck
    finally:
        await s.close()
