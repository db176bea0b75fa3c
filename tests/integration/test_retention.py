"""Retention: finished jobs and every part of them leave JetStream; live ones stay."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from compute.publishers import NatsPublisher
from orchestrator.service import Orchestrator
from shared import results, subjects, wire
from shared.bus import Bus
from shared.client import ShoalClient
from shared.errors import NotFound
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.helpers_jobs import noop_job
from tests.integration.stack import FAST, Stack, stack


def results_job(name: str, stdout: str) -> dict[str, Any]:
    spec = noop_job(name, stdout=stdout)
    spec["Tasks"][0]["Publisher"] = {"Type": "nats"}
    return spec


async def held(bus: Bus, stream: str, subject: str) -> int:
    """How many messages `stream` holds on `subject` (wildcards allowed)."""
    request = json.dumps({"subjects_filter": subject}).encode()
    info = json.loads(await bus.request(f"$JS.API.STREAM.INFO.{stream}", request))
    if "error" in info:
        assert info["error"].get("err_code") == 10059, info  # no such stream: nothing held
        return 0
    return sum((info.get("state", {}).get("subjects") or {}).values())


async def parts(bus: Bus, job: wire.JobView) -> dict[str, int]:
    """Everything JetStream holds of a job, by kind."""
    ns, jid = job.namespace, job.id
    bucket = results.namespace_bucket(ns)
    objects = 0
    for e in job.executions:
        objects += await held(
            bus, f"OBJ_{bucket}", results.meta_subject(bucket, results.archive_name(jid, e.id))
        )
    return {
        "job": await held(bus, "KV_shoal-jobs", f"$KV.shoal-jobs.{ns}.{jid}"),
        "executions": await held(bus, "KV_shoal-executions", f"$KV.shoal-executions.{ns}.{jid}.*"),
        "versions": await held(bus, "KV_shoal-job-versions", f"$KV.shoal-job-versions.{jid}.*"),
        "events": await held(bus, subjects.EVENTS_STREAM, subjects.events(ns, jid)),
        "logs": await held(bus, subjects.LOGS_STREAM, subjects.logs_of_job(ns, jid)),
        "results": objects,
    }


def own_buckets(s: Stack) -> None:
    for agent in s.agents.values():
        agent.publishers["nats"] = NatsPublisher(agent.bus, agent.node_id)


async def finished_with_everything(client: ShoalClient) -> wire.JobView:
    """A named job run twice (so a version is kept), with logs and a result archive."""
    job_id = await client.submit(results_job("kept", "one\n"))
    assert (await client.wait(job_id, timeout=30)).state == "Completed"
    await client.submit(results_job("kept", "two\n"))
    view = await client.wait(job_id, timeout=30)
    assert view.state == "Completed" and view.version == 2, view
    return await client.describe(job_id)


async def gone(client: ShoalClient, job_id: str) -> bool:
    try:
        await client.describe(job_id)
    except NotFound:
        return all(j.id != job_id for j in await client.jobs(every=True))
    return False


async def test_a_sweep_removes_every_part_of_a_finished_job_and_leaves_live_ones(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        own_buckets(s)
        done = await finished_with_everything(client)
        before = await parts(client.bus, done)
        assert all(before.values()), before  # every kind of part is there to remove
        running = await client.submit(noop_job("long", sleep=600))
        daemon = await client.submit(noop_job("d", type="daemon", count=None, sleep=600))
        service = await client.submit(noop_job("svc", type="service", sleep=600))
        stopped_service = await client.submit(noop_job("svc2", type="service", sleep=600))
        for job_id in (running, daemon, service, stopped_service):
            await eventually(lambda j=job_id: _is(client, j, "Running"), what=f"{job_id} running")
        await client.stop(stopped_service)
        orchestrator = s.orchestrator
        assert orchestrator is not None
        # A week later: only the finished batch job is due.
        later = time.time() + 30 * 24 * 3600
        assert orchestrator.retention.due(later) == [done.id]
        assert await orchestrator.retention.sweep_once(later) == 1
        assert await gone(client, done.id)
        for job_id in (running, daemon, service, stopped_service):
            await client.describe(job_id)  # still there
        await orchestrator.retention.clean_markers(time.monotonic() + 60)
        after = await parts(client.bus, done)
        assert not any(after.values()), after
        bucket = results.namespace_bucket("default")
        assert await held(client.bus, f"OBJ_{bucket}", f"$O.{bucket}.>") == 0  # chunks too
        # Sweeping again finds nothing; nothing else was touched.
        assert await orchestrator.retention.sweep_once(later) == 0
        assert {j.id for j in await client.jobs(every=True)} == {
            running,
            daemon,
            service,
            stopped_service,
        }


async def _is(client: ShoalClient, job_id: str, state: str) -> bool:
    return (await client.describe(job_id)).state == state


async def test_with_a_short_retention_a_finished_job_is_gone_soon_after(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        await s.stop_orchestrator()
        await s.start_orchestrator(dataclasses.replace(FAST, job_retention=1.0))
        own_buckets(s)
        job_id = await client.submit(results_job("brief", "hello\n"))
        view = await client.wait(job_id, timeout=30)
        assert view.state == "Completed"
        await eventually(lambda: gone(client, job_id), timeout=20, what="the job purged")
        await eventually(
            lambda: _nothing_held(client.bus, view), timeout=20, what="nothing left in JetStream"
        )


async def _nothing_held(bus: Bus, view: wire.JobView) -> bool:
    return not any((await parts(bus, view)).values())


@pytest.mark.parametrize("retention", [0.0])
async def test_retention_zero_keeps_everything(
    nats_server: EmbeddedNats, tmp_path: Path, retention: float
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        await s.stop_orchestrator()
        orchestrator: Orchestrator = await s.start_orchestrator(
            dataclasses.replace(FAST, job_retention=retention)
        )
        job_id = await client.submit(noop_job("forever"))
        assert (await client.wait(job_id, timeout=30)).state == "Completed"
        assert orchestrator.retention.due(time.time() + 10 * 365 * 24 * 3600) == []
