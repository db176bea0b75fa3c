"""Issue 19: a Count over the orchestrator's limit (`max_count`, `--max-count`) is refused at
submit as `invalid` with the path `Count`, and nothing is stored: no job, no new version."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import yaml

from orchestrator.api import named_job_id
from shared.errors import InvalidSpec
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.helpers_jobs import in_state, noop_job, run_cli
from tests.integration.stack import FAST, Stack


@asynccontextmanager
async def limited(url: str, tmp: Path, max_count: int | None, agents: int) -> AsyncIterator[Stack]:
    """The test stack with an orchestrator whose max_count is `max_count` (None: the default)."""
    config = FAST if max_count is None else dataclasses.replace(FAST, max_count=max_count)
    s = Stack(url, tmp)
    try:
        await s.start_orchestrator(config)
        for i in range(agents):
            await s.add_agent(f"node-{i}")
        yield s
    finally:
        await s.close()


def _count_problem(exc: InvalidSpec) -> str:
    [problem] = exc.problems
    assert problem.path == "Count", exc.problems
    return problem.message


async def _stored(s: Stack, name: str) -> bool:
    assert s.orchestrator is not None
    job_id = named_job_id("default", name)
    in_kv = await s.orchestrator.mirror.fetch_job("default", job_id)
    return in_kv is not None or s.orchestrator.mirror.job(job_id) is not None


async def test_over_the_default_limit_is_refused_and_nothing_stored(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    spec = noop_job("three-zeros-too-many", count=1_000_000)
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    async with limited(nats_server.url, tmp_path, None, agents=0) as s, await s.client() as client:
        with pytest.raises(InvalidSpec) as refused:
            await client.submit(spec)
        message = _count_problem(refused.value)
        assert "Count 1000000" in message, message
        assert "limit of 100000 partitions" in message, message
        assert "--max-count" in message and "split the work" in message, message

        done = await run_cli("job", "run", str(path), url=nats_server.url)
        assert done.code == 2, done
        assert "Count" in done.stderr and "100000" in done.stderr, done
        assert "Traceback" not in done.stderr, done

        assert not await _stored(s, spec["Name"])
        assert await client.jobs(every=True) == []
        listed = await run_cli("job", "list", "--all", url=nats_server.url)
        assert listed.code == 0, listed
        assert spec["Name"] not in listed.stdout, listed


async def test_exactly_the_limit_runs(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with limited(nats_server.url, tmp_path, 5, agents=2) as s, await s.client() as client:
        with pytest.raises(InvalidSpec) as refused:
            await client.submit(noop_job("six", count=6))
        assert "limit of 5 partitions" in _count_problem(refused.value)
        with pytest.raises(InvalidSpec) as refused:
            await client.submit(noop_job("six-replicas", type="service", count=6, sleep=30))
        assert "limit of 5 replicas" in _count_problem(refused.value)
        assert not await _stored(s, "six") and not await _stored(s, "six-replicas")

        job_id = await client.submit(noop_job("five", count=5))
        view = await eventually(
            lambda: in_state(client, job_id, "Completed"), what="5 partitions completed"
        )
        assert view.execution_counts == {"completed": 5}, view


async def test_an_update_over_the_limit_keeps_the_old_version(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with limited(nats_server.url, tmp_path, 5, agents=2) as s, await s.client() as client:
        assert s.orchestrator is not None
        job_id = await client.submit(noop_job("grows", count=2))
        await eventually(lambda: in_state(client, job_id, "Completed"), what="version 1 done")

        with pytest.raises(InvalidSpec) as refused:
            await client.submit(noop_job("grows", count=50))
        assert "Count 50" in _count_problem(refused.value)
        path = tmp_path / "grows.yaml"
        path.write_text(yaml.safe_dump(noop_job("grows", count=50), sort_keys=False))
        done = await run_cli("job", "run", str(path), url=nats_server.url)
        assert done.code == 2, done

        # A rerun makes a version too: refused once the limit is below the stored Count.
        s.orchestrator.api.max_count = 1
        with pytest.raises(InvalidSpec) as refused:
            await client.rerun(job_id)
        assert "Count 2" in _count_problem(refused.value)

        view = await client.describe(job_id)
        assert (view.version, view.state) == (1, "Completed"), view
        assert [v.version for v in await client.versions(job_id)] == [1]
        stored = await s.orchestrator.mirror.fetch_job("default", job_id)
        assert stored is not None and stored.version == 1, stored
