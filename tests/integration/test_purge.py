"""`job purge`: refused for a job that has not ended, removes a finished one, and a purge cut
short is finished by the next leader."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec
import pytest
from prometheus_client import REGISTRY

from orchestrator import retention
from orchestrator.retention import PURGING, purge_subject
from shared import subjects
from shared.bus import Bus
from shared.errors import Conflict, NotFound
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.helpers_jobs import noop_job, run_cli
from tests.integration.stack import FAST, stack
from tests.integration.test_retention import (
    finished_with_everything,
    gone,
    own_buckets,
    parts,
)


def _purged(job_type: str) -> float:
    return REGISTRY.get_sample_value("shoal_jobs_purged_total", {"type": job_type}) or 0.0


async def test_purge_refuses_a_running_job_and_removes_a_finished_one(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "_MARKER_GRACE", 3600.0)  # kept until cleaned below
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        own_buckets(s)
        done = await finished_with_everything(client)
        running = await client.submit(noop_job("long", sleep=600))
        with pytest.raises(Conflict, match="only a job that has ended"):
            await client.purge(running)
        refused = await run_cli("job", "purge", running, url=nats_server.url)
        assert refused.code == 1 and "stop it first" in refused.stderr, refused
        assert (await client.describe(running)).state in ("Pending", "Running")

        purged_before = _purged("batch")
        cli = await run_cli("job", "purge", done.id, url=nats_server.url)
        assert _purged("batch") == purged_before + 1
        assert cli.code == 0 and f"Job {done.id} (Completed) purged." in cli.stderr, cli
        with pytest.raises(NotFound):
            await client.describe(done.id)
        assert [j.id for j in await client.jobs(every=True)] == [running]
        again = await run_cli("job", "purge", done.id, url=nats_server.url)
        assert again.code == 1 and "no job" in again.stderr, again
        # Nothing is left of it but the job record's delete marker, for the watches: its
        # execution records went with one purge, without a marker each.
        left = await parts(client.bus, done)
        assert left == {**dict.fromkeys(left, 0), "job": 1}, left
        orchestrator = s.orchestrator
        assert orchestrator is not None
        await orchestrator.retention.clean_markers(float("inf"))
        left = await parts(client.bus, done)
        assert not any(left.values()), left
        # Its name is free again: a new job of that name starts from version 1.
        job_id = await client.submit(noop_job("kept"))
        assert job_id == done.id
        view = await client.wait(job_id, timeout=30)
        assert view.state == "Completed" and view.version == 1


async def test_a_purge_cut_short_is_finished_by_the_next_leader(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        own_buckets(s)
        done = await finished_with_everything(client)
        orchestrator = s.orchestrator
        assert orchestrator is not None
        # What a purge stored before a kill -9: the mark, and the logs removed.
        job = orchestrator.mirror.job(done.id)
        assert job is not None
        marked = msgspec.structs.replace(job, state_message=PURGING + job.state_message)
        await orchestrator.mirror.update_job(marked)
        await purge_subject(
            client.bus, subjects.LOGS_STREAM, subjects.logs_of_job(done.namespace, done.id)
        )
        # Hidden at once: a job being purged is not listed or found.
        with pytest.raises(NotFound):
            await client.describe(done.id)
        assert await client.jobs(every=True) == []
        await s.stop_orchestrator()
        # The next leader keeps everything (retention 0), yet finishes the purge begun.
        await s.start_orchestrator(dataclasses.replace(FAST, job_retention=0.0))
        await eventually(lambda: gone(client, done.id), timeout=30, what="the purge finished")
        nxt = s.orchestrator
        assert nxt is not None
        await eventually(
            lambda: nxt.mirror.job(done.id) is None and not nxt.mirror.executions_of(done.id),
            what="the mirror forgetting the job",
        )
        await nxt.retention.clean_markers(float("inf"))
        left = await parts(client.bus, done)
        assert not any(left.values()), left


async def test_stored_subjects_reads_every_page_past_the_servers_100000(
    nats_server: EmbeddedNats,
) -> None:
    """A job of more than 100,000 executions: the server lists at most 100,000 subjects an
    answer, and the rest's result archives were left behind."""
    bus = await Bus.connect(nats_server.url, name="pages")
    try:
        config = {"name": "PAGES", "subjects": ["pages.>"], "storage": "memory"}
        await bus.request("$JS.API.STREAM.CREATE.PAGES", msgspec.json.encode(config))
        n = 100_050
        for i in range(n):
            await bus.publish(f"pages.j.e{i}", b"")
        await bus.flush()

        async def all_stored() -> bool:
            info = msgspec.json.decode(await bus.request("$JS.API.STREAM.INFO.PAGES", b""))
            return int(info["state"]["messages"]) == n

        await eventually(all_stored, timeout=30)
        held = await retention.stored_subjects(bus, "PAGES", "pages.j.*")
        assert len(held) == n and set(held) == {f"pages.j.e{i}" for i in range(n)}
        assert await retention.stored_subjects(bus, "PAGES", "pages.none.*") == []
        assert await retention.stored_subjects(bus, "NO_SUCH_STREAM", "x.*") == []
    finally:
        await bus.close()
