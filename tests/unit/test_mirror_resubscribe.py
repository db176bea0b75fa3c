"""A mirror whose watch of the jobs bucket was down while a job was purged (its delete marker
removed a second later) drops that job when the watch is made again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import msgspec

from orchestrator.state import StateMirror
from shared import subjects
from shared.bus import Entry
from tests.conftest import eventually
from tests.kv_doubles import MemoryBuckets, MemoryKV
from tests.records import JOB


class Dropping(MemoryKV):
    """A bucket whose watch fails when `drop` is set, as one whose connection closed."""

    def __init__(self, bucket: str) -> None:
        super().__init__(bucket)
        self.drop = asyncio.Event()

    async def follow(
        self, pattern: str, apply: Callable[[Entry | None], None], *, since: int = 0
    ) -> None:
        following = asyncio.ensure_future(super().follow(pattern, apply, since=since))
        try:
            await self.drop.wait()
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        self.drop.clear()
        raise ConnectionError("the watch's connection closed")


async def test_a_job_purged_while_the_watch_was_down_is_dropped() -> None:
    jobs = Dropping(subjects.JOBS_BUCKET)
    mirror = StateMirror(MemoryBuckets(jobs))
    await mirror.start()
    try:
        gone = msgspec.structs.replace(JOB, id="j-gone", name="j-gone")
        kept = msgspec.structs.replace(JOB, id="j-kept", name="j-kept", created_at=2.0)
        await mirror.create_job(gone)
        await mirror.create_job(kept)
        # Deleted, and its marker purged, without the watch seeing either.
        del jobs._entries[subjects.job_key(gone.namespace, gone.id)]
        jobs.drop.set()
        await eventually(lambda: mirror.held(gone.id) is None, timeout=5)
        assert mirror.held(kept.id) is not None
        assert [j.id for j in mirror.newest_jobs()] == [kept.id]
        # A job stored after the replay began is not in it, and stays.
        later = msgspec.structs.replace(JOB, id="j-later", name="j-later", created_at=3.0)
        await mirror.create_job(later)
        mirror._drop_unseen_jobs({subjects.job_key("default", kept.id)}, newest=2)
        assert mirror.held(later.id) is not None and mirror.held(kept.id) is not None
    finally:
        await mirror.stop()
