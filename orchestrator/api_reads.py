"""The API's reads: a job found by id, prefix or name, its views, pages of jobs, executions and
history, and its kept versions, answered from the mirror (a settled job's from KV)."""

from __future__ import annotations

import itertools

import msgspec

from orchestrator.answers import job_cursor
from orchestrator.job_ids import current_version
from orchestrator.namespaces import request_namespace
from orchestrator.retention import PURGING
from orchestrator.state import StateMirror
from shared import subjects, wire
from shared.bus import KV, Bus
from shared.errors import Conflict, NotFound, ShoalError
from shared.views import VIEW_EXECUTIONS, execution_view, job_view, listed_view

# job.list answers at most this many jobs a page (each view is at least a few hundred bytes, and
# an answer must fit NATS's max payload); ask again with its Next for more.
JOB_PAGE = 500


class JobReads:
    """The read verbs of `Api` (api.py), which gives them its bus, mirror and versions bucket."""

    _bus: Bus
    _mirror: StateMirror
    _versions: KV

    async def _version(self, job: wire.JobRecord, number: int) -> wire.JobVersion:
        if number == job.version:
            return current_version(job)
        entry = await self._versions.get(f"{job.id}.{number}")
        if entry is None or entry.value is None:
            raise NotFound(f"job {job.id} has no version {number} (it has 1..{job.version})")
        return wire.decode(entry.value, wire.JobVersion, what="job version")

    async def versions(self, data: bytes, scope: str | None = None) -> wire.VersionList:
        ref = wire.decode(data, wire.JobRef, what="versions request")
        job = self.resolve(ref.job_id, request_namespace(scope, ref.namespace))
        job = await self._mirror.stored_job(job)
        found = []
        for number in range(1, job.version + 1):
            try:
                found.append(await self._version(job, number))
            except NotFound:
                continue
        return wire.VersionList(versions=found)

    def resolve(
        self, ref: str, namespace: str | None = None, *, purging: bool = False
    ) -> wire.JobRecord:
        """A job by id, unique id prefix, or name; with `namespace`, only that namespace's
        (a job of another is not found, as if it did not exist). A job being purged is not
        found unless `purging`."""
        held = self._mirror.held(ref)
        job = held.value if held else None
        if (
            job is not None
            and namespace in (None, job.namespace)
            and (purging or not job.state_message.startswith(PURGING))
        ):
            return job
        jobs = [
            v.value
            for v in itertools.chain(self._mirror.jobs.values(), self._mirror.settled.values())
            if (namespace is None or v.value.namespace == namespace)
            and (purging or not v.value.state_message.startswith(PURGING))
        ]
        matches = [j for j in jobs if j.id.startswith(ref)]
        if not matches:
            matches = [j for j in jobs if j.name == ref]
        if not matches:
            where = "" if namespace is None else f" in namespace {namespace!r}"
            raise NotFound(f"no job with id, id prefix or name {ref!r}{where}")
        if len(matches) > 1:
            ids = ", ".join(sorted(m.id for m in matches)[:5])
            raise Conflict(f"{ref!r} matches {len(matches)} jobs ({ids}); give more of the id")
        return matches[0]

    def view(self, job: wire.JobRecord, *, with_spec: bool = False) -> wire.JobView:
        """The job as the mirror holds it: a settled job's without its executions listed."""
        if job.id in self._mirror.settled:
            return listed_view(job, [])
        return job_view(job, self._mirror.executions_of(job.id), with_spec=with_spec)

    async def describe(self, data: bytes, scope: str | None = None) -> wire.JobView:
        ref = wire.decode(data, wire.JobRef, what="describe request")
        job = self.resolve(ref.job_id, request_namespace(scope, ref.namespace))
        executions = await self._mirror.stored_executions(job)
        job = await self._mirror.stored_job(job)
        if ref.version and ref.version != job.version:
            old = await self._version(job, ref.version)
            then = msgspec.structs.replace(job, version=ref.version, spec=old.spec)
            return job_view(then, executions, with_spec=True)
        return job_view(job, executions, with_spec=True)

    async def list_jobs(self, data: bytes, scope: str | None = None) -> wire.JobList:
        req = wire.decode(data, wire.ListRequest, what="list request")
        namespace = request_namespace(scope, req.namespace)
        limit = min(max(req.limit, 1), JOB_PAGE)
        page: list[wire.JobRecord] = []
        more = False
        # The mirror keeps the jobs in this order: the page is read from the cursor on.
        for job in self._mirror.newest_jobs(job_cursor(req.after) if req.after else None):
            if (
                (namespace is not None and job.namespace != namespace)
                or (req.states and job.state not in req.states)
                or job.state_message.startswith(PURGING)
            ):
                continue
            if len(page) == limit:
                more = True
                break
            page.append(job)
        next_ = f"{page[-1].created_at!r}/{page[-1].id}" if more else ""
        executions_of = self._mirror.executions_of
        views = [listed_view(j, executions_of(j.id)) for j in page]
        return wire.JobList(jobs=views, next=next_)

    async def executions(self, data: bytes, scope: str | None = None) -> wire.ExecutionList:
        req = wire.decode(data, wire.ExecutionsRequest, what="executions request")
        job = self.resolve(req.job_id, request_namespace(scope, req.namespace))
        every = await self._mirror.stored_executions(job)
        start = max(req.offset, 0)
        page = every[start : start + min(max(req.limit, 1), VIEW_EXECUTIONS)]
        return wire.ExecutionList(executions=[execution_view(e) for e in page], total=len(every))

    async def job_history(self, data: bytes, scope: str | None = None) -> wire.History:
        """A page of the job's events: at most `Limit`, and no more than half a NATS message
        (a daemon on 10,000 nodes has tens of thousands, and a final event carries a view)."""
        req = wire.decode(data, wire.HistoryRequest, what="history request")
        job = self.resolve(req.job_id, request_namespace(scope, req.namespace))
        events: list[wire.JobEvent] = []
        room, limit = self._bus.max_payload // 2, max(req.limit, 1)
        stream, subject = subjects.EVENTS_STREAM, subjects.events(job.namespace, job.id)
        last = 0  # the stream sequence of the last event in this page
        async for msg in self._bus.replay(stream, subject, after=max(req.after, 0)):
            if events and len(msg.data) > room:  # the next page starts with this one
                return wire.History(events=events, next=last)
            sequence, pending = msg.position()
            last, room = sequence, room - len(msg.data)
            try:
                events.append(wire.decode(msg.data, wire.JobEvent))
            except ShoalError:
                continue
            if len(events) >= limit:
                return wire.History(events=events, next=sequence if pending else 0)
        return wire.History(events=events)
