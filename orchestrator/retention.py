"""Removes finished jobs and everything that belongs to them: after a retention period, or at once.

A purge marks the job record first (a CAS of its state message to `purging: …`), then removes
its parts — result objects, logs, history events, kept versions, execution records — and the
job record last. Every step is idempotent and the mark is stored, so a purge cut short (a
kill -9 between two steps) is finished by the next leader's sweep, which takes marked jobs
first. The execution records go with one purge of their subjects; the job record is deleted (a
delete marker, which every orchestrator's mirror watch applies, dropping the job's executions
with it) and the marker purged from the bucket's stream a little later, so JetStream ends up
holding nothing of the job. Running, queued, daemon and service jobs are never swept.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from orchestrator.state import StateMirror
from shared import results, subjects, wire
from shared.bus import KV, Bus
from shared.cas import retry_cas
from shared.errors import Conflict, NotFound, ShoalError
from shared.memory import give_back, renew_free_lists, shrink

log = logging.getLogger(__name__)

PURGING = "purging: "  # how a marked job's state message starts
# Job types retention never sweeps (they run until stopped; `job purge` of one that has
# ended is the user's call).
KEPT_TYPES = frozenset({"daemon", "service"})
_MARKER_GRACE = 1.0  # seconds a delete marker stays for the mirrors' watches to apply it


def is_purging(job: wire.JobRecord) -> bool:
    return job.state_message.startswith(PURGING)


class _PurgeReply(msgspec.Struct):
    success: bool = False
    purged: int = 0
    error: dict[str, Any] | None = None


async def purge_subject(bus: Bus, stream: str, subject: str) -> int:
    """Remove every message of `stream` on `subject` (wildcards allowed); how many went. A
    stream that does not exist holds nothing."""
    raw = await bus.request(
        f"$JS.API.STREAM.PURGE.{stream}", msgspec.json.encode({"filter": subject})
    )
    try:
        reply = msgspec.json.decode(raw, type=_PurgeReply)
    except msgspec.DecodeError as exc:
        raise ShoalError(f"purge {stream} {subject}: unreadable answer {raw[:200]!r}") from exc
    if not reply.success:
        error = reply.error or {}
        if error.get("err_code") == 10059:  # JSStreamNotFoundErr
            return 0
        raise ShoalError(f"purge {stream} {subject}: {error.get('description', error)}")
    return reply.purged


class _StreamState(msgspec.Struct):
    subjects: dict[str, int] | None = None


class _StreamInfo(msgspec.Struct):
    state: _StreamState | None = None
    error: dict[str, Any] | None = None
    total: int = 0  # subjects matching the filter, over every page


async def stored_subjects(bus: Bus, stream: str, subject: str) -> list[str]:
    """The subjects matching `subject` that `stream` holds messages on (every page: the
    server answers at most 100,000 a request, and a job of more executions has more)."""
    out: list[str] = []
    while True:
        request = msgspec.json.encode({"subjects_filter": subject, "offset": len(out)})
        raw = await bus.request(f"$JS.API.STREAM.INFO.{stream}", request)
        try:
            info = msgspec.json.decode(raw, type=_StreamInfo)
        except msgspec.DecodeError as exc:
            raise ShoalError(f"read {stream}: unreadable answer {raw[:200]!r}") from exc
        if info.error is not None:
            if info.error.get("err_code") == 10059:  # JSStreamNotFoundErr
                return out
            raise ShoalError(f"read {stream}: {info.error.get('description', info.error)}")
        page = list((info.state.subjects if info.state else None) or {})
        out.extend(page)
        if not page or len(out) >= info.total:
            return out


class Retention:
    """`purge(job)` for the API; `sweep_forever()` for the leader; `clean_forever()` for all."""

    def __init__(
        self,
        bus: Bus,
        mirror: StateMirror,
        *,
        retention: float,
        batch: int = 100,
        purged: Callable[[wire.JobRecord], None] = lambda job: None,
        compact: Callable[[], None] | None = None,
    ) -> None:
        """`compact`: rebuilds the tables of what a burst of jobs filled (the mirror's, by
        default) before freed memory is given back."""
        self._bus = bus
        self._mirror = mirror
        self.retention = retention
        self.batch = batch
        self._purged = purged  # told of each job removed (the metric)
        self._compact = compact
        self._execs: KV | None = None
        self._jobs: KV | None = None
        self._markers: list[tuple[float, str, str]] = []  # (due, stream, subject)
        self._running: dict[str, asyncio.Future[wire.JobRecord | None]] = {}
        self._unreturned = False  # jobs were purged since freed memory was last given back
        self._backlog: list[str] = []  # due at the last scan, not purged yet (last first)
        self.next_due = float("inf")

    async def _kv(self) -> tuple[KV, KV]:
        if self._execs is None or self._jobs is None:
            self._execs = await self._bus.kv(subjects.EXECUTIONS_BUCKET)
            self._jobs = await self._bus.kv(subjects.JOBS_BUCKET)
        return self._execs, self._jobs

    # ---- one job ---------------------------------------------------------------------------

    async def purge(self, job_id: str, *, shown: bool = True) -> wire.JobRecord | None:
        """Remove a finished job and all its parts; the job as it was, None if it is gone
        already. Conflict if it has not ended. `shown`: answer once this orchestrator's mirror
        holds the job no more (its watch applied the delete), so that a describe right after
        is NotFound; the sweep, which nobody waits on, does not wait for it."""
        running = self._running.get(job_id)
        if running is None:  # else another request is purging it: that one's outcome
            running = asyncio.ensure_future(self._purge(job_id))
            self._running[job_id] = running
            running.add_done_callback(functools.partial(self._ended, job_id))
        job = await asyncio.shield(running)
        if job is not None and shown:
            await self._mirror.until_dropped(job_id, 5.0)
        return job

    def _ended(self, job_id: str, task: asyncio.Future[wire.JobRecord | None]) -> None:
        self._running.pop(job_id, None)
        # Retrieved here: the callers that awaited it were told, and one that went (a sweep
        # cut short as leadership moved, a client gone) leaves the purge to the next sweep.
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.debug("purging %s: %s", job_id, exc)

    async def stop(self) -> None:
        """Idempotent: cancel the purges under way (a marked job's purge is finished by the
        next leader's sweep)."""
        running = list(self._running.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _purge(self, job_id: str) -> wire.JobRecord | None:
        job = await retry_cas(lambda: self._mark(job_id), what=f"job {job_id}")
        if job is None:
            return None
        await self._remove_parts(job)
        return job

    async def _mark(self, job_id: str) -> wire.JobRecord | None:
        held = self._mirror.held(job_id)
        if held is None:
            return None
        job = held.value
        if job.state not in wire.TERMINAL_JOB_STATES:
            raise Conflict(
                f"job {job_id} is {job.state}: only a job that has ended (Completed, Failed, "
                f"Stopped) can be purged; stop it first (shoal job stop {job_id})"
            )
        if is_purging(job):
            return job
        # A settled job is marked as held, trimmed, without reading its whole record back: a
        # marked job is shown to nobody (the API takes it as gone) and its spec is never read
        # again, and a sweep of 100,000 jobs spent a request on each.
        marked = msgspec.structs.replace(job, state_message=PURGING + job.state_message)
        await self._mirror.update_job(marked)
        return marked

    async def _remove_parts(self, job: wire.JobRecord) -> None:
        _, jobs_kv = await self._kv()
        ns, jid = job.namespace, job.id
        prefix = subjects.execution_key(ns, jid, "")
        # The keys the bucket's stream holds (one request; a KV watch would make a consumer
        # per job, and a sweep makes them faster than the server lets them go).
        stream = f"KV_{subjects.EXECUTIONS_BUCKET}"
        held = await stored_subjects(
            self._bus, stream, f"$KV.{subjects.EXECUTIONS_BUCKET}.{prefix}*"
        )
        cut = len(f"$KV.{subjects.EXECUTIONS_BUCKET}.")
        keys = sorted(subject[cut:] for subject in held)
        exec_ids = {k[len(prefix) :] for k in keys}
        exec_ids.update(e.id for e in self._mirror.executions_of(jid))
        await self._remove_results(ns, jid, exec_ids)
        await purge_subject(self._bus, subjects.LOGS_STREAM, subjects.logs_of_job(ns, jid))
        await purge_subject(self._bus, subjects.EVENTS_STREAM, subjects.events(ns, jid))
        versions = f"KV_{subjects.JOB_VERSIONS_BUCKET}"
        await purge_subject(self._bus, versions, f"$KV.{subjects.JOB_VERSIONS_BUCKET}.{jid}.*")
        # The execution records go with one purge of their subjects, no delete marker each:
        # a mirror holds none of a settled job's, and drops an unsettled one's with the job
        # record's delete below (state.py), which stays a KV delete for the watches to see.
        await purge_subject(self._bus, stream, f"$KV.{subjects.EXECUTIONS_BUCKET}.{prefix}*")
        await jobs_kv.delete(subjects.job_key(ns, jid))
        due = time.monotonic() + _MARKER_GRACE
        self._markers.append(
            (due, f"KV_{subjects.JOBS_BUCKET}", f"$KV.{subjects.JOBS_BUCKET}.{ns}.{jid}")
        )
        self._mirror.forget_executions(jid)
        self._purged(job)
        log.info("purged job %s (%s, %d executions)", jid, job.state, len(exec_ids))

    async def _remove_results(self, namespace: str, job_id: str, exec_ids: set[str]) -> None:
        bucket = results.namespace_bucket(namespace)
        stream = f"OBJ_{bucket}"
        for exec_id in sorted(exec_ids):
            name = results.archive_name(job_id, exec_id)
            try:
                obj = await results.object_info(self._bus, bucket, name)
            except NotFound:
                obj = None
            if obj is not None:  # chunks first: metadata never points to nothing
                await purge_subject(self._bus, stream, results.chunk_subject(bucket, obj.nuid))
            await purge_subject(self._bus, stream, results.meta_subject(bucket, name))

    # ---- the leader's sweep -------------------------------------------------------------------

    def due(self, now: float) -> list[str]:
        """Jobs to purge now, marked ones first, at most a batch. A scan finds every job due
        and the batches after it are taken from what it found: a scan of 100,000 jobs per
        batch of 100 made purging them quadratic."""
        if not self._backlog:
            self._backlog = self._scan(now)
            self._backlog.reverse()  # taken from the end
        batch = self._backlog[-self.batch :]
        del self._backlog[-self.batch :]
        batch.reverse()
        return batch

    def _scan(self, now: float) -> list[str]:
        marked: list[str] = []
        expired: list[tuple[float, str]] = []
        self.next_due = float("inf")  # when the first job not yet due will be
        mirror = self._mirror
        for v in itertools.chain(list(mirror.settled.values()), list(mirror.jobs.values())):
            job = v.value
            if job.state not in wire.TERMINAL_JOB_STATES or v.revision == 0:
                continue
            if is_purging(job):
                marked.append(job.id)
            elif self.retention > 0 and job.type not in KEPT_TYPES:
                if job.updated_at + self.retention <= now:
                    expired.append((job.updated_at, job.id))
                else:
                    self.next_due = min(self.next_due, job.updated_at + self.retention)
        expired.sort()
        return marked + [j for _, j in expired]

    async def sweep_once(self, now: float | None = None, *, concurrency: int = 64) -> int:
        """Purge one batch of due jobs; how many were purged."""
        due = self.due(time.time() if now is None else now)
        if not due:
            return 0
        slots = asyncio.Semaphore(concurrency)
        done = 0

        async def one(job_id: str) -> None:
            nonlocal done
            async with slots:
                try:
                    if await self.purge(job_id, shown=False) is not None:
                        done += 1
                except Conflict as exc:  # re-run, or rerun meanwhile: not ended any more
                    log.info("not purging %s: %s", job_id, exc)
                except ShoalError as exc:  # the mark stays: the next sweep finishes it
                    log.warning("purging %s: %s; trying again later", job_id, exc)

        await asyncio.gather(*(one(j) for j in due))
        return done

    def sweep_every(self) -> float:
        if self.retention <= 0:
            return 10.0  # still finishes purges a `job purge` left marked
        return min(max(self.retention / 4, 0.2), 60.0)

    async def sweep_forever(self) -> None:
        while True:
            try:
                purged = await self.sweep_once()
            except ShoalError as exc:
                log.warning("retention sweep: %s", exc)
                purged = 0
            if purged:
                self._unreturned = True
            elif not self._markers:
                await self._give_back()
            if purged < self.batch:  # a full batch: more are due, go on at once
                # Until the next job is due (jobs that end meanwhile are due later still),
                # at most a sweep period.
                wait = min(self.sweep_every(), max(self.next_due - time.time(), 0.0))
                await asyncio.sleep(max(wait, 0.1))
            else:
                await asyncio.sleep(0)

    async def _give_back(self) -> None:
        """Once the last purges are done, their markers too: without this the orchestrator
        kept its peak size for good after a purge (the heap is reused, never returned)."""
        if self._unreturned:
            self._unreturned = False
            (self._compact or self._mirror.compact)()
            shrink(self._running)
            await renew_free_lists()
            give_back()

    async def clean_forever(self, every: float = 0.25) -> None:
        """Purge the delete markers of purged jobs from the buckets' streams once the mirrors
        have had time to apply them."""
        while True:
            await asyncio.sleep(every)
            if await self.clean_markers() and not self._markers and not self._running:
                await self._give_back()

    async def clean_markers(self, now: float | None = None, *, concurrency: int = 16) -> int:
        """Purge the markers due by `now`; how many subjects were purged."""
        now = time.monotonic() if now is None else now
        ready = [m for m in self._markers if m[0] <= now]
        if not ready:
            return 0
        self._markers = [m for m in self._markers if m[0] > now]
        slots = asyncio.Semaphore(concurrency)

        async def one(stream: str, subject: str) -> None:
            async with slots:
                try:
                    await purge_subject(self._bus, stream, subject)
                except ShoalError as exc:
                    log.warning("purging the delete markers %s: %s", subject, exc)

        await asyncio.gather(*(one(stream, subject) for _, stream, subject in ready))
        return len(ready)
