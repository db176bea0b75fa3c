"""A mirror's start over stored jobs: the unsettled jobs' executions read in a few batched
reads where the bucket answers those, else one job at a time or in one replay of the bucket,
whichever reads less, and the jobs listed newest first however the replay ordered them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import msgspec
import pytest

from orchestrator import state
from orchestrator.state import StateMirror
from shared import subjects, wire
from shared.bus import Entry
from tests.conftest import eventually
from tests.kv_doubles import MemoryBuckets, MemoryKV
from tests.records import COMPLETED, JOB, RUNNING


class Recording(MemoryKV):
    """An executions bucket that notes each replay's `since` and each job-by-job read."""

    def __init__(self, bucket: str, *, batched: bool = False) -> None:
        super().__init__(bucket, batched=batched)
        self.follows: list[int] = []
        self.reads: list[str] = []

    async def follow(
        self, pattern: str, apply: Callable[[Entry | None], None], *, since: int = 0
    ) -> None:
        self.follows.append(since)
        await super().follow(pattern, apply, since=since)

    async def watch(self, pattern: str = ">", *, since: int = 0) -> AsyncIterator[Entry | None]:
        if pattern != ">":
            self.reads.append(pattern)
        async for entry in super().watch(pattern, since=since):
            # One job's read sees that job's entries only, as a filtered consumer would.
            if entry is None or pattern == ">" or entry.key.startswith(pattern[:-1]):
                yield entry


def settled_job(i: int) -> wire.JobRecord:
    return msgspec.structs.replace(
        JOB,
        id=f"j-old-{i:03}",
        name=f"j-old-{i:03}",
        state="Completed",
        created_at=float(i),
        settled={"completed": 1},
    )


async def stored(
    settled: int, live: list[str], *, batched: bool = False
) -> tuple[MemoryKV, Recording]:
    """Buckets holding `settled` settled jobs with one execution each, and the `live` jobs
    running one execution each."""
    jobs = MemoryKV(subjects.JOBS_BUCKET)
    executions = Recording(subjects.EXECUTIONS_BUCKET, batched=batched)
    for i in range(settled):
        job = settled_job(i)
        await jobs.create(subjects.job_key(job.namespace, job.id), wire.encode(job))
        done = msgspec.structs.replace(COMPLETED, id=f"e-old-{i:03}", job_id=job.id)
        await executions.create(
            subjects.execution_key(job.namespace, job.id, done.id), wire.encode(done)
        )
    for n, job_id in enumerate(live):
        job = msgspec.structs.replace(
            JOB, id=job_id, name=job_id, state="Running", created_at=1000.0 + n
        )
        await jobs.create(subjects.job_key(job.namespace, job.id), wire.encode(job))
        running = msgspec.structs.replace(RUNNING, id=f"e-{job_id}", job_id=job_id)
        await executions.create(
            subjects.execution_key(job.namespace, job.id, running.id), wire.encode(running)
        )
    return jobs, executions


async def _a_later_write_arrives(mirror: StateMirror, executions: MemoryKV, job_id: str) -> None:
    """What is written after the start reaches the mirror: the job's execution completes."""
    done = msgspec.structs.replace(COMPLETED, id=f"e-{job_id}", job_id=job_id)
    key = subjects.execution_key("default", job_id, done.id)
    await executions.update(key, wire.encode(done), mirror.executions[done.id].revision)
    await eventually(
        lambda: mirror.executions[done.id].value.compute_state == "completed", timeout=5
    )


async def test_a_few_unsettled_jobs_among_many_are_read_one_at_a_time() -> None:
    settled = state.ONE_READ_COSTS * 2
    jobs, executions = await stored(settled, ["j-live-a", "j-live-b"])
    mirror = StateMirror(MemoryBuckets(jobs, executions))
    await mirror.start()
    try:
        assert executions.follows == [await executions.last_revision() + 1]  # no replay
        assert sorted(executions.reads) == ["default.j-live-a.*", "default.j-live-b.*"]
        assert set(mirror.executions) == {"e-j-live-a", "e-j-live-b"}
        assert len(mirror.settled) == settled
        await _a_later_write_arrives(mirror, executions, "j-live-a")
    finally:
        await mirror.stop()


async def test_many_unsettled_jobs_are_read_in_one_replay() -> None:
    live = [f"j-live-{i}" for i in range(3)]
    # Fewer stored entries than the reads of three jobs one at a time would cost.
    jobs, executions = await stored(state.ONE_READ_COSTS, live)
    mirror = StateMirror(MemoryBuckets(jobs, executions))
    await mirror.start()
    try:
        assert executions.follows == [0] and executions.reads == []
        assert set(mirror.executions) == {f"e-{job_id}" for job_id in live}  # settled: none
    finally:
        await mirror.stop()


async def test_jobs_replayed_out_of_creation_order_are_listed_newest_first() -> None:
    jobs = MemoryKV(subjects.JOBS_BUCKET)
    order = [5, 1, 4, 2, 3]  # the order of their last writes: created 1..5
    for i in order:
        job = settled_job(i)
        await jobs.create(subjects.job_key(job.namespace, job.id), wire.encode(job))
    mirror = StateMirror(MemoryBuckets(jobs))
    await mirror.start()
    try:
        assert [j.id for j in mirror.newest_jobs()] == [settled_job(i).id for i in (5, 4, 3, 2, 1)]
        # After the start, a job shown out of order still goes in its place, once.
        late = msgspec.structs.replace(settled_job(0), id="j-old-2-b", created_at=2.5)
        mirror.show_job(late, 0)
        mirror.show_job(late, 0)
        listed = [j.id for j in mirror.newest_jobs()]
        assert listed == [
            "j-old-005",
            "j-old-004",
            "j-old-003",
            "j-old-2-b",
            "j-old-002",
            "j-old-001",
        ]
        assert [j.id for j in mirror.newest_jobs((3.0, "j-old-003"))] == listed[3:]
    finally:
        await mirror.stop()


async def test_past_a_bound_unsettled_jobs_are_read_in_one_replay_however_much_is_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(state, "LOAD_EACH_UP_TO", 1)  # each read leaves a consumer a while
    jobs, executions = await stored(state.ONE_READ_COSTS * 2, ["j-live-a", "j-live-b"])
    mirror = StateMirror(MemoryBuckets(jobs, executions))
    await mirror.start()
    try:
        assert executions.follows == [0] and executions.reads == []
        assert set(mirror.executions) == {"e-j-live-a", "e-j-live-b"}
    finally:
        await mirror.stop()


@pytest.mark.parametrize("live", [2, 2_000])  # a few; more than would be read one at a time
async def test_where_the_bucket_answers_batched_reads_the_unsettled_jobs_are_read_so(
    live: int,
) -> None:
    ids = [f"j-live-{i}" for i in range(live)]
    jobs, executions = await stored(10, ids, batched=True)
    mirror = StateMirror(MemoryBuckets(jobs, executions))
    await mirror.start()
    try:
        # No replay and no job read alone, whatever the count, and only the new writes followed.
        assert executions.batches == 1 and executions.reads == []
        assert executions.follows == [await executions.last_revision() + 1]
        assert set(mirror.executions) == {f"e-{job_id}" for job_id in ids}  # settled: none
        await _a_later_write_arrives(mirror, executions, "j-live-0")
    finally:
        await mirror.stop()
