"""The request-reply API (`shoal.v1.api.*`, `shoal.v1.ns.<ns>.api.*`): validates, writes state,
answers from the mirror."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from orchestrator.answers import fitting, job_cursor
from orchestrator.evals import enqueue
from orchestrator.history import History
from orchestrator.job_ids import canonical, chosen_id, current_version, named_job_id, resubmitted
from orchestrator.namespaces import in_scope, request_namespace
from orchestrator.node_api import NodeApi
from orchestrator.registry import NodeRegistry
from orchestrator.replies import error_reply
from orchestrator.retention import PURGING
from orchestrator.secrets import refuse_missing_secrets
from orchestrator.state import StateMirror
from shared import subjects, trace, wire
from shared.bus import Bus, Message, Subscription
from shared.cas import retry_cas
from shared.errors import Conflict, InvalidSpec, NotFound, Problem, ShoalError
from shared.spec import JobSpec, load_spec, spec_from_canonical, spec_from_data
from shared.views import VIEW_EXECUTIONS, execution_view, job_view, listed_view

log = logging.getLogger(__name__)
# job.list answers at most this many jobs a page (each view is at least a few hundred bytes, and
# an answer must fit NATS's max payload); ask again with its Next for more.
JOB_PAGE = 500
# The most partitions (replicas) a job may have unless the orchestrator is told otherwise: a
# typo of three zeros must not flood the planner, the KV and the nodes with executions.
MAX_COUNT = 100_000

T = TypeVar("T")
Handler = Callable[[bytes], Awaitable[Any]]
# A job verb's handler: the request, and the namespace whose subject it came on (None: the
# cluster subject, every namespace; only admins may publish there).
JobHandler = Callable[[bytes, str | None], Awaitable[Any]]


class Api:
    def __init__(
        self,
        bus: Bus,
        mirror: StateMirror,
        registry: NodeRegistry,
        history: History,
        *,
        max_attempts: int = 3,
        max_count: int = MAX_COUNT,
        submitted: Callable[[wire.JobRecord, JobSpec], bool] | None = None,
        purge: Callable[[str], Awaitable[wire.JobRecord | None]] | None = None,
    ) -> None:
        self._submitted = submitted
        self._purge = purge
        self._subscriptions: list[Subscription] = []
        self._bus = bus
        self._mirror = mirror
        self._registry = registry
        self._history = history
        self.max_attempts = max_attempts
        self.max_count = max_count
        self._job_handlers: dict[str, JobHandler] = {
            "job.submit": self.submit,
            "job.describe": self.describe,
            "job.list": self.list_jobs,
            "job.stop": self.stop,
            "job.executions": self.executions,
            "job.history": self.job_history,
            "job.versions": self.versions,
            "job.rerun": self.rerun,
            "job.purge": self.purge,
        }
        self._node_handlers: dict[str, Handler] = NodeApi(mirror, registry).handlers()

    async def start(self) -> None:
        self._versions = await self._bus.kv(subjects.JOB_VERSIONS_BUCKET)
        # Requests are independent: handle many at once (each waits on NATS round trips).
        # Other verbs (secret.*) belong to other parts, in the same queue group: these
        # subscriptions must not take their requests.
        for subject in (
            f"{subjects.API_PREFIX}.job.>",
            f"{subjects.API_PREFIX}.node.>",
            subjects.ns_api("*", "job.>"),
        ):
            self._subscriptions.append(
                await self._bus.subscribe(
                    subject, self._dispatch, queue=subjects.API_QUEUE, concurrency=64
                )
            )

    async def drain(self, timeout: float) -> None:
        """Stop taking requests (the queue group hands new ones to the other orchestrators)
        and answer the ones already taken: a submit cut off between its job's write and its
        history's first line would leave a job whose history does not say it was submitted.
        Idempotent."""
        subscriptions, self._subscriptions = self._subscriptions, []
        drained = await asyncio.gather(*(s.drain(timeout) for s in subscriptions))
        if not all(drained):
            log.warning("API requests still unanswered after %.0fs of stopping", timeout)

    async def _handle(self, subject: str, data: bytes) -> Any:
        scope, verb = subjects.api_scope(subject)
        job_handler = self._job_handlers.get(verb)
        if job_handler is not None:
            return await job_handler(data, scope)
        node_handler = self._node_handlers.get(verb) if scope is None else None
        if node_handler is not None:
            return await node_handler(data)
        known = [*self._job_handlers, *(self._node_handlers if scope is None else ())]
        raise NotFound(f"unknown API verb {verb!r}; known: {', '.join(known)}")

    async def _dispatch(self, msg: Message) -> None:
        verb = msg.subject.rsplit(".api.", 1)[-1]
        try:
            result = await self._handle(msg.subject, msg.data)
            reply = wire.ApiReply(ok=True, data=msgspec.Raw(fitting(result, self._bus.max_payload)))
        except ShoalError as exc:
            reply = error_reply(exc)
        except Exception as exc:  # a bug must still answer, never leave the caller hanging
            log.exception("API %s crashed", verb)
            reply = wire.ApiReply(
                ok=False, error=wire.ApiError(code="error", message=f"internal error: {exc}")
            )
        encoded = wire.encode(reply)
        size = len(encoded)
        if size > self._bus.max_payload and reply.error is not None:
            # Each problem is there three times (Message, Problems, Details): the text alone.
            brief = wire.ApiError(code=reply.error.code, message=reply.error.message)
            encoded = wire.encode(wire.ApiReply(ok=False, error=brief))
        if len(encoded) > self._bus.max_payload:
            # Unsent, the caller would wait out its timeout and be told nobody answered (a
            # job.history of tens of thousands of events).
            too_big = f"the answer to {verb} is {size} bytes, more than NATS carries"
            limit = f" ({self._bus.max_payload}: the servers' max_payload)"
            error = wire.ApiError(code="error", message=too_big + limit)
            encoded = wire.encode(wire.ApiReply(ok=False, error=error))
        await self._bus.respond(msg, encoded)

    # ---- jobs --------------------------------------------------------------------------------

    async def submit(self, data: bytes, scope: str | None = None) -> wire.SubmitReply:
        req = wire.decode(data, wire.SubmitRequest, what="submit request")
        trace.mark("api.received", req.job_id)
        if bytes(req.spec) != b"null":
            try:
                raw = json.loads(bytes(req.spec))
            except ValueError as exc:
                raise InvalidSpec(f"Spec is not JSON: {exc}") from None
            except RecursionError:
                raise InvalidSpec("Spec is nested too deeply") from None
            spec = spec_from_data(raw)
        elif req.spec_text:
            spec = load_spec(req.spec_text, req.variables)
        else:
            raise InvalidSpec("a submit request needs Spec (a JSON object) or SpecText (YAML)")
        spec = in_scope(spec, scope)
        self._within_limits(spec)  # before anything is stored, for a new job or a new version
        # Every secret its Env refers to (`secret:<name>`) must exist in its namespace.
        await refuse_missing_secrets(self._bus, spec, spec.namespace)
        # A named job's id follows from its name, so the KV create below is what keeps names
        # unique, even against a submit this orchestrator's mirror has not seen yet.
        if spec.name:
            job_id = named_job_id(spec.namespace, spec.name)
        else:
            job_id = chosen_id(req.job_id) if req.job_id else f"j-{uuid.uuid4()}"
        # The same job submitted again while its first submit is being stored: answer from
        # what that submit stored, not from the job shown meanwhile.
        await self._mirror.in_flight.wait_job_create(job_id)
        now = time.time()
        existing = self._by_name(spec.namespace, spec.name) if spec.name else None
        if existing is not None:
            return await self._new_version(existing, spec, req.force, now)
        if req.job_id and (known := self._mirror.held(job_id)) is not None:
            return resubmitted(await self._mirror.stored_job(known.value), spec)
        spec = spec.model_copy(update={"id": job_id, "name": spec.name or job_id})
        record = wire.JobRecord(
            id=job_id,
            name=spec.name,
            namespace=spec.namespace,
            type=spec.type,
            spec=msgspec.Raw(canonical(spec)),
            priority=spec.priority,
            created_at=now,
            updated_at=now,
            max_attempts=self.max_attempts,
        )
        # The current version lives in the job record; the versions bucket keeps the ones a
        # new version replaced, so a job that is never updated costs one write here. A leader
        # starts evaluating the job while its create is in flight (see InFlight.creating_job).
        try:
            trace.mark("api.validated", job_id)
            async with self._mirror.in_flight.creating_job(record):
                early = self._submitted is not None and self._submitted(record, spec)
                await self._mirror.create_job(record)
                trace.mark("api.stored", job_id)
                await self._history.job(record, "", "job submitted")
        except Conflict:
            taken = await self._mirror.fetch_job(spec.namespace, job_id)
            if taken is None:
                raise
            if not spec.name:
                return resubmitted(taken, spec)
            return await self._new_version(taken, spec, req.force, now)
        if not early:
            await self._schedule(record, spec, "submitted")
        return wire.SubmitReply(job_id=job_id, version=1)

    async def _schedule(self, job: wire.JobRecord, spec: JobSpec, trigger: str) -> None:
        """Hand the job to the scheduler: in-process when this orchestrator leads (a crash
        before it is evaluated is covered by the new leader's scan of unfinished jobs),
        through the durable SHOAL_EVALS queue otherwise."""
        if self._submitted is not None and self._submitted(job, spec):
            return
        for delay in (0.25, 0.5, 1.0, 0.0):  # a stream electing a leader answers in seconds
            try:
                await enqueue(self._bus, job, trigger)
                return
            except ShoalError as exc:
                if not delay:
                    # The job is stored: answering with an error would make the client submit
                    # it again. The leader's rescue scan evaluates a job left Pending.
                    log.warning("job %s stored; its evaluation was not queued (%s)", job.id, exc)
                    return
                await asyncio.sleep(delay)

    def _by_name(self, namespace: str, name: str) -> wire.JobRecord | None:
        job_id = self._mirror.by_name.get((namespace, name))
        held = self._mirror.held(job_id) if job_id else None
        return held.value if held else None

    async def _new_version(
        self, job: wire.JobRecord, spec: JobSpec, force: bool, now: float
    ) -> wire.SubmitReply:
        job = await self._mirror.stored_job(job)
        spec = spec.model_copy(update={"id": job.id})
        encoded = canonical(spec)
        if bytes(job.spec) == encoded and not force:
            return wire.SubmitReply(
                job_id=job.id,
                version=job.version,
                changed=False,
                warnings=[
                    f"the spec is unchanged from version {job.version} ({job.state}), so "
                    f"nothing new was submitted; to run it again: shoal job rerun {job.id}, "
                    "shoal job run --force, or Force: true in job.submit"
                ],
            )
        if spec.type != job.type:
            raise Conflict(f"job {job.name!r} is a {job.type} job; it cannot become {spec.type}")
        if job.state_message.startswith(PURGING):
            raise Conflict(f"job {job.name!r} is being purged; submit it again once it is gone")
        record = msgspec.structs.replace(
            job,
            spec=msgspec.Raw(encoded),
            version=job.version + 1,
            state="Pending",
            state_message="",
            priority=spec.priority,
            created_at=now,
            updated_at=now,
            queued_since=0.0,
            settled=None,
        )
        await self._keep_version(job)  # before it is replaced (a lost CAS leaves a harmless copy)
        await self._mirror.update_job(record)
        await asyncio.gather(
            self._history.job(record, job.state, f"version {record.version} submitted"),
            self._schedule(record, spec, "updated"),
        )
        return wire.SubmitReply(job_id=job.id, version=record.version)

    async def _keep_version(self, job: wire.JobRecord) -> None:
        await self._versions.put(f"{job.id}.{job.version}", wire.encode(current_version(job)))

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

    async def rerun(self, data: bytes, scope: str | None = None) -> wire.SubmitReply:
        """Run the current spec again as a new version."""
        ref = wire.decode(data, wire.JobRef, what="rerun request")
        job = self.resolve(ref.job_id, request_namespace(scope, ref.namespace))
        job = await self._mirror.stored_job(job)
        spec = spec_from_canonical(bytes(job.spec))
        self._within_limits(spec)  # a spec stored before the limit was lowered
        await refuse_missing_secrets(self._bus, spec, job.namespace)  # deleted since
        return await self._new_version(job, spec, True, time.time())

    def _within_limits(self, spec: JobSpec) -> None:
        """Refuse a spec this orchestrator will not make a job version of."""
        if spec.count is not None and spec.count > self.max_count:
            unit = "replicas" if spec.type == "service" else "partitions"
            raise InvalidSpec(
                [
                    Problem(
                        "Count",
                        f"Count {spec.count} is more than this orchestrator's limit of "
                        f"{self.max_count} {unit} (shoal orchestrator --max-count); split the "
                        "work into several jobs",
                    )
                ]
            )

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

    async def stop(self, data: bytes, scope: str | None = None) -> wire.JobView:
        req = wire.decode(data, wire.StopRequest, what="stop request")
        namespace = request_namespace(scope, "")

        async def store() -> tuple[wire.JobRecord, wire.JobRecord | None]:
            job = self.resolve(req.job_id, namespace)
            if job.state in wire.TERMINAL_JOB_STATES:
                return job, None
            record = msgspec.structs.replace(
                job, state="Stopped", state_message=req.reason, updated_at=time.time()
            )
            await self._mirror.update_job(record)
            return job, record

        job, stopped = await retry_cas(store, what=f"job {req.job_id}")
        if stopped is None:
            return self.view(job)
        await self._history.job(stopped, job.state)
        await enqueue(self._bus, stopped, "stopped")
        return self.view(stopped)

    async def purge(self, data: bytes, scope: str | None = None) -> wire.JobView:
        """Remove a job that has ended and everything of it (orchestrator/retention.py); the
        job as it was. Conflict for a job that has not ended."""
        ref = wire.decode(data, wire.JobRef, what="purge request")
        job = self.resolve(ref.job_id, request_namespace(scope, ref.namespace), purging=True)
        if job.state not in wire.TERMINAL_JOB_STATES:
            raise Conflict(
                f"job {job.id} is {job.state}: only a job that has ended (Completed, Failed, "
                f"Stopped) can be purged; stop it first (shoal job stop {job.id})"
            )
        view = self.view(job)
        if self._purge is None:
            raise ShoalError("this orchestrator cannot purge jobs")
        await self._purge(job.id)
        return msgspec.structs.replace(view, state_message="purged")

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
