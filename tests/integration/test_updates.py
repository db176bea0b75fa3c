"""Job updates by name: versions, unchanged specs, batch replacement, rolling service/daemon."""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgspec
import pytest

from shared.client import ShoalClient
from shared.errors import Conflict
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.helpers_jobs import agent_running, noop_job
from tests.integration.helpers_longrunning import (
    Sample,
    forever,
    history_counts,
    live,
    long_stack,
    running,
    sampling,
)


def _params(spec: msgspec.Raw) -> dict[str, object]:
    return dict(json.loads(bytes(spec))["Tasks"][0]["Engine"]["Params"])


async def test_resubmitting_a_name_makes_a_new_version_and_replaces_a_batch(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        v1 = noop_job("nightly", count=2, sleep="forever", stdout="v1\n")
        first = await client.submit_full(v1)
        assert (first.version, first.changed) == (1, True), first
        job_id = first.job_id

        async def both_running() -> bool:
            return len(running((await client.describe(job_id)).executions)) == 2

        await eventually(both_running, what="2 v1 executions running")
        old_ids = {e.id for e in await client.executions(job_id)}

        v2 = noop_job("nightly", count=2, sleep=0.3, stdout="v2\n")
        second = await client.submit_full(v2)
        assert (second.job_id, second.version, second.changed) == (job_id, 2, True), second

        view = await client.wait(job_id, timeout=15)
        assert view.state == "Completed", view
        assert view.version == 2, view
        assert [e.compute_state for e in view.executions] == ["completed", "completed"], view
        assert not {e.id for e in view.executions} & old_ids
        old = [e for e in await client.executions(job_id) if e.id in old_ids]
        assert [e.compute_state for e in old] == ["cancelled", "cancelled"], old
        for agent in s.agents.values():
            await eventually(lambda a=agent: not agent_running(a) & old_ids, what="v1 gone")
        out = b"".join([line.data async for line in client.logs(job_id)])
        assert out.count(b"v2\n") == 2, out

        # The same spec again: nothing to do, and it says so.
        same = await client.submit_full(v2)
        assert (same.job_id, same.version, same.changed) == (job_id, 2, False), same
        assert same.warnings and "unchanged" in same.warnings[0], same
        assert len(await client.executions(job_id)) == 4
        assert (await client.describe(job_id)).state == "Completed"

        # ...unless forced: version 3 runs it again.
        forced = await client.submit_full(v2, force=True)
        assert (forced.job_id, forced.version, forced.changed) == (job_id, 3, True), forced
        view = await client.wait(job_id, timeout=15, until=lambda v: v.version == 3 and v.terminal)
        assert view.state == "Completed", view
        assert len(view.executions) == 2 and len(await client.executions(job_id)) == 6, view

        assert [v.version for v in await client.versions(job_id)] == [1, 2, 3]
        assert _params((await client.describe(job_id, version=1)).spec)["Sleep"] == "forever"

        # A name cannot change its job type.
        with pytest.raises(Conflict, match="batch"):
            await client.submit(forever("nightly", type="service", count=1))


async def test_service_versions_describe_old_version_and_rerun(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        job_id = await client.submit(forever("api", type="service", count=1, stdout="v1\n"))

        async def one_running() -> list:
            return running((await client.describe(job_id)).executions)

        v1_ids = {e.id for e in await eventually(one_running, what="a v1 replica")}
        reply = await client.submit_full(forever("api", type="service", count=1, stdout="v2\n"))
        assert (reply.job_id, reply.version, reply.changed) == (job_id, 2, True), reply

        old = await client.describe(job_id, version=1)
        assert old.version == 1 and _params(old.spec)["Stdout"] == "v1\n", old
        assert {e.id for e in old.executions} == v1_ids, old
        current = await client.describe(job_id)
        assert current.version == 2 and _params(current.spec)["Stdout"] == "v2\n", current
        assert not {e.id for e in current.executions} & v1_ids, current
        versions = await client.versions(job_id)
        assert [v.version for v in versions] == [1, 2], versions
        assert [_params(v.spec)["Stdout"] for v in versions] == ["v1\n", "v2\n"]

        again = await client.rerun(job_id)
        assert (again.job_id, again.version, again.changed) == (job_id, 3, True), again
        assert [v.version for v in await client.versions(job_id)] == [1, 2, 3]
        assert _params((await client.describe(job_id)).spec)["Stdout"] == "v2\n"


async def _check_rollout(
    client: ShoalClient, job_id: str, samples: list[Sample], since: float, count: int
) -> None:
    """Never below Count-1 running, never above Count+1 live: in the ~50 ms samples, and
    exactly, in the job's history since the update was submitted."""
    assert samples, "the sampler took no samples"

    async def settled() -> list[tuple[float, int, int]]:
        # history is appended just after the KV write the caller saw: let it catch up
        replay = history_counts(await client.history(job_id), since)
        return replay if replay and replay[-1][1:] == (count, count) else []

    replay = await eventually(settled, timeout=5, what="history to show the rollout done")
    print(
        f"\nrollout: {replay[-1][0] - since:.3f}s; {len(samples)} samples, running min "
        f"{min(s.running for s in samples)}; history: running min "
        f"{min(r for _, r, _ in replay)}, live max {max(n for _, _, n in replay)}"
    )
    assert min(s.running for s in samples) >= count - 1, [s.running for s in samples]
    assert max(s.live for s in samples) <= count + 1, [s.live for s in samples]
    assert min(r for _, r, _ in replay) >= count - 1, replay
    assert max(n for _, _, n in replay) <= count + 1, replay


async def _rolled(client: ShoalClient, job_id: str, version: int, count: int) -> bool:
    """The current version is `version`, has `count` running replicas, and nothing else lives."""
    view = await client.describe(job_id)
    if view.version != version:
        return False
    current = {e.id for e in running(view.executions)}
    others = [e for e in live(await client.executions(job_id)) if e.id not in current]
    return len(current) == count and not others


async def test_service_update_replaces_replicas_one_at_a_time(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=3) as s, await s.client() as client:
        job_id = await client.submit(forever("web", type="service", count=2, stdout="v1\n"))

        async def both_running() -> bool:
            return len(running((await client.describe(job_id)).executions)) == 2

        await eventually(both_running, what="2 v1 replicas")
        v1_ids = {e.id for e in (await client.describe(job_id)).executions}

        since = time.time()
        async with sampling(client, job_id) as samples:
            v2 = forever("web", type="service", count=2, stdout="v2\n")
            reply = await client.submit_full(v2)
            assert (reply.version, reply.changed) == (2, True), reply
            await eventually(
                lambda: _rolled(client, job_id, 2, 2), timeout=8, what="2 v2 replicas, no v1"
            )
        await _check_rollout(client, job_id, samples, since, count=2)

        view = await client.describe(job_id)
        assert view.state == "Running", view
        old = await client.describe(job_id, version=1)
        assert {e.id for e in old.executions} == v1_ids, old
        assert {e.compute_state for e in old.executions} == {"cancelled"}, old
        assert all("new version" in e.error for e in old.executions), old

        # rerun: version 3, rolled out the same way.
        since = time.time()
        async with sampling(client, job_id) as samples:
            again = await client.rerun(job_id)
            assert (again.job_id, again.version) == (job_id, 3), again
            await eventually(lambda: _rolled(client, job_id, 3, 2), timeout=8, what="2 v3")
        await _check_rollout(client, job_id, samples, since, count=2)
        v3_ids = {e.id for e in running((await client.describe(job_id)).executions)}
        await eventually(
            lambda: set().union(*(agent_running(a) for a in s.agents.values())) == v3_ids,
            what="the agents run only the 2 v3 replicas",
        )


async def test_daemon_update_rolls_node_by_node(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with long_stack(nats_server.url, tmp_path, agents=3) as s, await s.client() as client:
        job_id = await client.submit(forever("agentd", type="daemon", stdout="v1\n"))

        async def everywhere() -> bool:
            return len(running((await client.describe(job_id)).executions)) == 3

        await eventually(everywhere, what="v1 on every node")
        since = time.time()
        async with sampling(client, job_id) as samples:
            reply = await client.submit_full(forever("agentd", type="daemon", stdout="v2\n"))
            assert reply.version == 2, reply
            await eventually(
                lambda: _rolled(client, job_id, 2, 3), timeout=8, what="v2 on every node"
            )
        await _check_rollout(client, job_id, samples, since, count=3)
        view = await client.describe(job_id)
        assert sorted(e.node_id for e in running(view.executions)) == list(s.agents), view
        for agent in s.agents.values():
            await eventually(lambda a=agent: len(agent_running(a)) == 1, what="one copy each")
