"""A leader evaluates a submitted job while the job's KV create is in flight: the mirror shows
the job meanwhile, writes of it wait for the create, and work offered for a job whose create
failed is withdrawn (against a real nats-server and real agents)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from orchestrator.state import StateMirror
from shared import wire
from shared.bus import KV, Bus
from shared.client import new_job_id
from shared.errors import Conflict, NotFound, Unavailable
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.stack import stack

JOB = wire.JobRecord(
    id="j-1",
    name="j-1",
    namespace="default",
    type="batch",
    spec=msgspec.Raw(b"{}"),
    priority=0,
    created_at=1.0,
    updated_at=1.0,
    max_attempts=3,
)
LONG = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop", "Params": {"Sleep": 30}}}]}


async def started_mirror(bus: Bus) -> StateMirror:
    mirror = StateMirror(bus)
    await mirror.start()
    return mirror


async def test_shown_while_created_then_kept(bus: Bus) -> None:
    mirror = await started_mirror(bus)
    try:
        async with mirror.creating_job(JOB):
            assert mirror.jobs["j-1"].value == JOB and mirror.jobs["j-1"].revision == 0
            settled = asyncio.create_task(mirror.job_settled("j-1"))
            await mirror.create_job(JOB)
            await asyncio.sleep(0)
            assert not settled.done()  # the block (and its history line) is not over yet
        assert await settled is True
        assert mirror.jobs["j-1"].revision > 0
        assert await mirror.job_settled("j-1") is True
    finally:
        await mirror.stop()


@pytest.mark.parametrize("seen_first", [True, False], ids=["echo-first", "echo-any-time"])
async def test_a_failed_create_takes_the_job_back(bus: Bus, seen_first: bool) -> None:
    mirror, other = await started_mirror(bus), await started_mirror(bus)
    theirs = msgspec.structs.replace(JOB, name="theirs")
    try:
        await other.create_job(theirs)  # another orchestrator stored the id first
        if seen_first:
            await eventually(lambda: mirror.job("j-1") == theirs, what="the watch's echo")
        with pytest.raises(Conflict):
            async with mirror.creating_job(JOB):
                settled = asyncio.create_task(mirror.job_settled("j-1"))
                await mirror.create_job(JOB)
        assert await settled is False
        # What stays is what is stored: theirs, once the watch brings it (never ours).
        await eventually(lambda: mirror.job("j-1") == theirs, what="the stored job")
    finally:
        await mirror.stop()
        await other.stop()


async def test_a_job_cas_waits_for_the_create(bus: Bus) -> None:
    mirror = await started_mirror(bus)
    running = msgspec.structs.replace(JOB, state="Running")
    try:
        async with mirror.creating_job(JOB):
            cas = asyncio.create_task(mirror.update_job(running))
            await asyncio.sleep(0.05)
            assert not cas.done()  # a CAS on revision 0 would create the key instead
            await mirror.create_job(JOB)
            created = mirror.jobs["j-1"].revision
        await cas
        assert mirror.jobs["j-1"].revision > created
        assert mirror.job("j-1") == running
    finally:
        await mirror.stop()


async def test_a_job_cas_after_a_failed_create_is_a_conflict(bus: Bus) -> None:
    mirror = await started_mirror(bus)
    try:
        with pytest.raises(RuntimeError):
            async with mirror.creating_job(JOB):
                cas = asyncio.create_task(mirror.update_job(JOB))
                await asyncio.sleep(0)
                raise RuntimeError("the create failed")
        with pytest.raises(Conflict):
            await cas
        assert mirror.job("j-1") is None
    finally:
        await mirror.stop()


async def test_work_offered_for_a_job_that_was_not_stored_is_withdrawn(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's create fails only after a node took its task (JetStream refused that one
    write): the submit gets the error, and the task is cancelled and its record stopped."""
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        agent = s.agents["node-0"]
        assert s.orchestrator is not None
        jobs_kv = s.orchestrator.mirror._jobs_kv
        assert jobs_kv is not None

        async def refused_after_the_offer(self: KV, key: str, value: bytes) -> int:
            await eventually(lambda: agent.running_count == 1, what="the node took the task")
            raise Unavailable("JetStream did not store the job (injected)")

        monkeypatch.setattr(jobs_kv, "create", refused_after_the_offer.__get__(jobs_kv))
        job_id = new_job_id()
        with pytest.raises(Unavailable, match="injected"):
            await client.submit_full(LONG, job_id=job_id)
        await eventually(lambda: agent.running_count == 0, what="the task cancelled")
        mirror = s.orchestrator.mirror
        (record,) = mirror.executions_of(job_id)
        assert (record.compute_state, record.desired_state) == ("cancelled", "stopped")
        assert record.error == "its job was not stored"
        with pytest.raises(NotFound):
            await client.describe(job_id)
        monkeypatch.undo()
        view = await client.run({**LONG, "Tasks": [{"Engine": {"Type": "noop"}}]}, timeout=20)
        assert view.state == "Completed"  # the orchestrator carries on as before


async def test_output_is_shipped_while_the_task_runs(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Tailing starts one interval into a task (a shorter one ships once, at its end)."""
    spec = {
        "Type": "batch",
        "Tasks": [{"Engine": {"Type": "noop", "Params": {"Stdout": "early\n", "Sleep": 30}}}],
    }
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        job_id = await client.submit(spec)

        async def shipped() -> bool:
            return b"early" in b"".join([line.data async for line in client.logs(job_id)])

        await eventually(shipped, what="output shipped before the task ends")
        assert s.agents["node-0"].running_count == 1  # still running
        await client.stop(job_id)
