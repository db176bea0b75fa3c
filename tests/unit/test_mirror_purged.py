"""A purge removes a job's execution records without a delete marker each (one purge of their
subjects): a mirror drops the executions it holds with the job record's delete, and a purge
that answers waits for the mirror without polling it."""

from __future__ import annotations

import asyncio

import msgspec

from orchestrator.state import StateMirror
from shared import subjects, wire
from tests.conftest import eventually
from tests.kv_doubles import MemoryBuckets, MemoryKV
from tests.records import COMPLETED, JOB


async def test_a_deleted_job_takes_its_held_executions_with_it() -> None:
    jobs, execs = MemoryKV(subjects.JOBS_BUCKET), MemoryKV(subjects.EXECUTIONS_BUCKET)
    mirror = StateMirror(MemoryBuckets(jobs, execs))
    await mirror.start()
    try:
        ended = msgspec.structs.replace(JOB, state="Completed")
        other = msgspec.structs.replace(JOB, id="j-2", name="j-2", created_at=2.0)
        await mirror.create_job(ended)
        await mirror.create_job(other)
        theirs = msgspec.structs.replace(COMPLETED, id="e-2", job_id="j-2")
        for record in (COMPLETED, theirs):  # as another orchestrator wrote them: watched
            key = subjects.execution_key(record.namespace, record.job_id, record.id)
            await execs.create(key, wire.encode(record))
        await eventually(lambda: len(mirror.executions) == 2)
        # The execution record is left in the bucket, as a purge of its subject leaves no
        # marker for the watch to apply: only the job record's delete is seen.
        await jobs.delete(subjects.job_key(ended.namespace, ended.id))
        await eventually(lambda: mirror.held(ended.id) is None)
        assert mirror.executions_of(ended.id) == []
        assert "e-1" not in mirror.executions and "e-1" not in mirror.by_node["node-a"]
        assert [e.id for e in mirror.executions_of(other.id)] == ["e-2"]
    finally:
        await mirror.stop()


async def test_until_dropped_answers_when_the_delete_is_applied_or_times_out() -> None:
    jobs = MemoryKV(subjects.JOBS_BUCKET)
    mirror = StateMirror(MemoryBuckets(jobs))
    await mirror.start()
    try:
        await mirror.create_job(JOB)
        assert await mirror.until_dropped(JOB.id, 0.05) is False
        waiting = [asyncio.ensure_future(mirror.until_dropped(JOB.id, 5.0)) for _ in range(2)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiting)
        await jobs.delete(subjects.job_key(JOB.namespace, JOB.id))
        assert await asyncio.gather(*waiting) == [True, True]
        assert await mirror.until_dropped(JOB.id, 0.05) is True  # gone already
        assert mirror._dropping == {}
    finally:
        await mirror.stop()
