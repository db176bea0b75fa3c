"""The request-reply API (`shoal.v1.api.*`, `shoal.v1.ns.<ns>.api.*`): validates, writes state,
answers from the mirror."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from orchestrator.answers import fitting
from orchestrator.api_reads import JobReads
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

log = logging.getLogger(__name__)
# The most partitions (replicas) a job may have unless the orchestrator is told otherwise: a
# typo of three zeros must not flood the planner, the KV and the nodes with executions.
MAX_COUNT = 100_000

T = TypeVar("T")
Handler = Callable[[bytes], Awaitable[Any]]
# A job verb's handler: the request, and the namespace whose subject it came on (None: the
# cluster subject, every namespace; only admins may publish there).
JobHandler = Callable[[bytes, str | None], Awaitable[Any]]


class Api(JobReads):
    """The job and node verbs: writes here, reads in api_reads.py."""

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
