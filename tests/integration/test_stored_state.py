"""The stored-state subjects (`shoal.v1.ns.default.state.<job-id>.>`) and `run()` ending on them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.js.errors
import pytest

from shared import subjects, wire
from shared.bus import Bus
from shared.client import ShoalClient, new_job_id
from shared.errors import Conflict
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.stack import Stack, stack

NOOP = {"Type": "batch", "Count": 2, "Tasks": [{"Engine": {"Type": "noop"}}]}


async def test_run_returns_what_describe_shows(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        view = await client.run(NOOP, timeout=20)
        assert view.state == "Completed", view
        assert len(view.executions) == 2
        assert {e.compute_state for e in view.executions} == {"completed"}
        described = await client.describe(view.id)
        assert view == described
        assert json.loads(bytes(view.spec))["Count"] == 2 and view.count == 2


async def test_run_of_a_stopped_job(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    spec = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop", "Params": {"Sleep": 30}}}]}
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        run, job = await _running(s, client, spec)
        await client.stop(job.id)
        view = await run
        assert view.state == "Stopped", view
        assert view.id == job.id and len(view.executions) == 1


async def test_run_asks_the_api_when_an_execution_still_looks_live(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    """A record that never ends (here a stray one published by hand) keeps the stored view
    from closing: run() then answers with the API's view, which has no such execution."""
    spec = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop", "Params": {"Sleep": 1}}}]}
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        run, job = await _running(s, client, spec)
        stray = wire.ExecutionRecord(
            id="e-stray", job_id=job.id, namespace="default", node_id="node-9",
            compute_state="running",
        )  # fmt: skip
        await bus.publish(
            f"shoal.v1.ns.default.state.{job.id}.execution.e-stray", wire.encode(stray)
        )
        await bus.flush()
        assert s.agents["node-0"].running_count == 1  # published before the job could end
        view = await run
        assert view.state == "Completed", view
        assert [e.node_id for e in view.executions] == ["node-0"]
        assert view == await client.describe(job.id)


async def _running(
    s: Stack, client: ShoalClient, spec: dict[str, Any]
) -> tuple[asyncio.Task[wire.JobView], wire.JobView]:
    """run() of `spec` on the one agent, once its task is running; and the job as listed."""
    run = asyncio.create_task(client.run(spec, timeout=20))
    agent = s.agents["node-0"]
    await eventually(lambda: agent.running_count == 1, what="the task running")
    (job,) = await client.jobs()
    return run, job


async def test_state_subjects_carry_stored_writes_and_never_a_refused_cas(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = new_job_id()
        inbox = await bus.subscription(subjects.state_of_job("default", job_id))
        try:
            await client.submit_full(NOOP, job_id=job_id)
            # The leader evaluates a job while its create is in flight, so the first execution
            # record may be stored (and republished) before the job's own.
            seen = []
            while (first := await inbox.next(timeout=10)) is not None and ".execution." in (
                first.subject
            ):
                seen.append(first.subject)
            assert first is not None
            assert first.subject == f"shoal.v1.ns.default.state.{job_id}.job"
            record = wire.decode(first.data, wire.JobRecord)
            assert record.id == job_id
            view = await client.wait(job_id, timeout=20)
            assert view.state == "Completed"
            while (msg := await inbox.next(timeout=0.5)) is not None:
                seen.append(msg.subject)
            executions = [x for x in seen if ".execution." in x]
            assert {x.rsplit(".", 1)[1] for x in executions} == {e.id for e in view.executions}
            assert seen.count(f"shoal.v1.ns.default.state.{job_id}.job") >= 1

            # A CAS on a stale revision is refused, and nothing is republished for it.
            kv = await bus.kv(subjects.JOBS_BUCKET)
            key = subjects.job_key("default", job_id)
            entry = await kv.get(key)
            assert entry is not None and entry.value is not None
            stale = msgspec.structs.replace(record, state_message="stale write")
            try:
                await kv.update(key, wire.encode(stale), entry.revision - 1)
            except Conflict:
                pass
            else:
                raise AssertionError("a CAS on a stale revision was accepted")
            assert await inbox.next(timeout=0.5) is None
            await kv.update(key, wire.encode(stale), entry.revision)
            stored = await inbox.next(timeout=10)
            assert stored is not None
            assert wire.decode(stored.data, wire.JobRecord).state_message == "stale write"
        finally:
            await inbox.close()


async def test_buckets_made_before_republishing_get_it_added(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    """An upgrade: the buckets exist without a republish; the orchestrator adds it."""
    jobs = await bus.kv(subjects.JOBS_BUCKET)
    execs = await bus.kv(subjects.EXECUTIONS_BUCKET)
    job_id = new_job_id()
    inbox = await bus.subscription(subjects.state_of_job("default", job_id))
    try:
        await jobs.put(subjects.job_key("default", "j-before"), b"{}")
        assert await inbox.next(timeout=0.3) is None
        async with stack(nats_server.url, tmp_path, agents=0):
            await execs.create(subjects.execution_key("default", job_id, "e-1"), b"{}")
            msg = await inbox.next(timeout=10)
            assert msg is not None
            assert msg.subject == f"shoal.v1.ns.default.state.{job_id}.execution.e-1"
            await jobs.create(subjects.job_key("default", job_id), b"{}")
            msg = await inbox.next(timeout=10)
            assert msg is not None and msg.subject == f"shoal.v1.ns.default.state.{job_id}.job"
    finally:
        await inbox.close()


async def test_run_asks_the_api_where_the_stored_state_does_not_arrive(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Orchestrators that have not added the republish (or a user whose permissions predate
    `shoal.v1.ns.default.state.>`): run() notices nothing arrives and asks the API every 0.5 s,
    and so
    does every later wait of that client."""
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            for stream in ("KV_shoal-jobs", "KV_shoal-executions"):
                config = (await js.stream_info(stream)).config
                config.republish = None
                await js.update_stream(config)
        finally:
            await nc.close()
        first = await client.run(NOOP, timeout=20)
        assert first.state == "Completed" and first == await client.describe(first.id)
        assert client._waiter.reaches is False
        second = await client.run(NOOP, timeout=20)
        assert second.state == "Completed" and second == await client.describe(second.id)
        slow = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop", "Params": {"Sleep": 0.5}}}]}
        job_id = await client.submit(slow)
        # Less than the 2 s a client that expects the stored state waits before it asks.
        view = await client.wait(job_id, timeout=1.9)
        assert view.state == "Completed" and view == await client.describe(job_id)


async def test_a_bucket_whose_republish_cannot_be_added_still_opens(
    bus: Bus, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    await bus.kv(subjects.JOBS_BUCKET)

    async def refused(stream: str, wanted: object) -> None:
        raise nats.js.errors.ServiceUnavailableError()

    monkeypatch.setattr(bus, "_ensure_republish", refused)
    kv = await bus.kv(subjects.JOBS_BUCKET, republish=subjects.JOBS_REPUBLISH)
    assert await kv.create("default.j-1", b"{}") == 1
    assert "republish of bucket shoal-jobs" in caplog.text
    assert "clients will wait on the API instead" in caplog.text
