"""Settled jobs: an ended job with no live execution is held by every mirror as its record
without spec or executions, and is still described, listed, paged, re-run and purged."""

from __future__ import annotations

from pathlib import Path

from orchestrator.service import Orchestrator
from shared import subjects, wire
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.helpers_jobs import noop_job
from tests.integration.stack import Stack, stack


async def settled(orchestrator: Orchestrator, job_id: str) -> wire.JobRecord:
    """The job once `orchestrator`'s mirror holds it settled."""

    def held() -> wire.JobRecord | None:
        shown = orchestrator.mirror.settled.get(job_id)
        return shown.value if shown else None

    return await eventually(held, timeout=15)


def orchestrator_of(s: Stack) -> Orchestrator:
    assert s.orchestrator is not None
    return s.orchestrator


async def stored(orchestrator: Orchestrator, job: wire.JobRecord) -> wire.JobRecord:
    kv = await orchestrator.bus.kv(subjects.JOBS_BUCKET)
    entry = await kv.get(subjects.job_key(job.namespace, job.id))
    assert entry is not None and entry.value is not None
    return wire.decode(entry.value, wire.JobRecord)


async def test_an_ended_job_is_held_settled_and_still_shown_whole(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        orchestrator = orchestrator_of(s)
        job_id = await client.submit(noop_job("three", count=3, stdout="hi\n"))
        await client.wait(job_id, timeout=30)
        trimmed = await settled(orchestrator, job_id)
        mirror = orchestrator.mirror
        assert job_id not in mirror.jobs and mirror.job(job_id) is None
        assert job_id not in mirror.by_job
        assert not any(e.value.job_id == job_id for e in mirror.executions.values())
        assert bytes(trimmed.spec) == b'{"Count":3}'  # all a list view shows of it
        record = await stored(orchestrator, trimmed)
        assert record.settled == {"completed": 3} and record.state == "Completed"
        assert b"Tasks" in bytes(record.spec)  # KV keeps the whole spec

        view = await client.describe(job_id)  # read from KV: spec and executions
        assert view.state == "Completed" and view.count == 3
        assert view.execution_counts == {"completed": 3} and len(view.executions) == 3
        assert b"Tasks" in bytes(view.spec)
        first = await client.execution_page(job_id, 0, 2)
        rest = await client.execution_page(job_id, 2, 2)
        assert first.total == rest.total == 3
        assert [e.id for e in first.executions + rest.executions] == [e.id for e in view.executions]
        # A node's late word on one of its executions is checked against KV, not dropped.
        late = await mirror.refresh_execution(job_id, view.executions[0].id)
        assert late is not None and late.value.compute_state == "completed"
        assert not any(e.value.job_id == job_id for e in mirror.executions.values())
        assert await mirror.refresh_execution(job_id, "e-none") is None
        (listed,) = await client.jobs()
        assert listed.id == job_id and listed.count == 3 and listed.executions == []
        assert listed.execution_counts == {"completed": 3}
        assert (await client.describe(job_id[:10])).id == job_id  # by prefix too
        assert (await client.describe("three")).id == job_id  # and by name


async def test_a_restart_reads_no_settled_execution_and_answers_as_before(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        first = orchestrator_of(s)
        done = await client.submit(noop_job("done", count=2))
        await client.wait(done, timeout=30)
        await settled(first, done)
        running = await client.submit(noop_job("running", sleep=600))
        await eventually(
            lambda: any(e.compute_state == "running" for e in first.mirror.executions_of(running)),
            timeout=15,
        )
        await s.stop_orchestrator()
        second = await s.start_orchestrator()
        mirror = second.mirror
        assert done in mirror.settled and running in mirror.jobs
        held = {e.value.job_id for e in mirror.executions.values()}
        assert held == {running}  # the unsettled job's executions only
        view = await client.describe(done)
        assert view.execution_counts == {"completed": 2} and len(view.executions) == 2
        (now_running, ended) = await client.jobs()
        assert (now_running.id, ended.id) == (running, done)
        assert now_running.execution_counts == {"running": 1}
        assert ended.execution_counts == {"completed": 2}
        stopped = await client.stop(running)
        assert stopped.state == "Stopped"
        await settled(second, running)  # once its execution has stopped
        assert (await client.describe(running)).execution_counts == {"cancelled": 1}


async def test_a_settled_job_runs_again_and_is_purged(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        orchestrator = orchestrator_of(s)
        job_id = await client.submit(noop_job("again", stdout="one\n"))
        await client.wait(job_id, timeout=30)
        await settled(orchestrator, job_id)

        # The same name with another spec: a new version, compared with the stored spec.
        assert await client.submit(noop_job("again", stdout="two\n")) == job_id
        view = await client.wait(job_id, timeout=30)
        assert view.version == 2 and view.state == "Completed"
        trimmed = await settled(orchestrator, job_id)
        assert trimmed.version == 2 and trimmed.settled == {"completed": 1}
        # The same spec again changes nothing; a rerun makes version 3.
        same = await client.submit_full(noop_job("again", stdout="two\n"))
        assert not same.changed and same.version == 2
        await client.rerun(job_id)
        assert (await client.wait(job_id, timeout=30)).version == 3
        await settled(orchestrator, job_id)
        every = await client.executions(job_id)
        assert sorted(e.job_version for e in every) == [1, 2, 3]
        assert [v.version for v in await client.versions(job_id)] == [1, 2, 3]

        await client.purge(job_id)
        assert job_id not in orchestrator.mirror.settled
        assert await client.jobs(every=True) == []
