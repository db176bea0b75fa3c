"""The leader's settler: writes an ended job's execution counts into its record once none of
its executions is live, so that every mirror holds it trimmed (orchestrator/settled.py)."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from orchestrator.state import StateMirror
from shared import wire
from shared.errors import ShoalError
from shared.views import current_counts

log = logging.getLogger(__name__)

# How long a job stays as it ended before it is settled: the last reports of its executions
# (a stop's, a node's late word) land on the whole record rather than on a settled one.
SETTLE_AFTER = 1.0


class Settler:
    """Settles ended jobs, at most `batch` a sweep, every `every` seconds while leading."""

    def __init__(
        self,
        mirror: StateMirror,
        *,
        after: float = SETTLE_AFTER,
        every: float = 0.5,
        batch: int = 500,
    ) -> None:
        self._mirror = mirror
        self.after = after
        self.every = every
        self.batch = batch

    def due(self, now: float) -> list[wire.JobRecord]:
        """Ended jobs ready to settle: stored, quiet for `after`, with no live execution."""
        out: list[wire.JobRecord] = []
        mirror = self._mirror
        for job_id in list(mirror.ended):
            shown = mirror.jobs.get(job_id)
            if shown is None or not shown.revision:
                mirror.ended.discard(job_id)
                continue
            job = shown.value
            if job.state not in wire.TERMINAL_JOB_STATES or now - job.updated_at < self.after:
                continue
            if any(e.live for e in mirror.executions_of(job_id)):
                continue  # a stop still on its way to the node
            out.append(job)
            if len(out) >= self.batch:
                break
        return out

    async def settle_once(self, now: float | None = None, *, concurrency: int = 16) -> int:
        """Settle one batch of due jobs; how many were settled."""
        due = self.due(time.time() if now is None else now)
        if not due:
            return 0
        slots = asyncio.Semaphore(concurrency)
        done = 0

        async def one(job: wire.JobRecord) -> None:
            nonlocal done
            counts = current_counts(job, self._mirror.executions_of(job.id))
            async with slots:
                try:
                    await self._mirror.update_job(msgspec.structs.replace(job, settled=counts))
                    done += 1
                except ShoalError as exc:  # changed meanwhile (a re-run, a purge): next sweep
                    log.debug("not settling %s now: %s", job.id, exc)

        await asyncio.gather(*(one(job) for job in due))
        return done

    async def settle_forever(self) -> None:
        while True:
            try:
                settled = await self.settle_once()
            except ShoalError as exc:
                log.warning("settling ended jobs: %s; trying again", exc)
                settled = 0
            # A full batch: more are due (jobs end faster than a batch a period), go on.
            await asyncio.sleep(0 if settled >= self.batch else self.every)
