"""The orchestrator's in-memory mirror of the JetStream KV state, and its CAS writers.

KV is the truth. Every orchestrator watches the three buckets and keeps decoded records in
memory, so API reads and scheduling decisions never wait on NATS. Writes are compare-and-swap
on the revision the mirror holds; a successful write is applied locally at once (the watch
echoes it later with the same revision, which is then ignored), a lost CAS re-reads the key and
raises Conflict so the caller re-decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared import subjects, wire
from shared.bus import KV, Bus, Entry
from shared.errors import Conflict, InvalidSpec
from shared.lifecycle import Supervisor

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(slots=True)
class Versioned(Generic[R]):
    value: R
    revision: int


class StateMirror:
    """Jobs, executions and nodes as last seen in KV, kept current by watches."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.jobs: dict[str, Versioned[wire.JobRecord]] = {}
        self.executions: dict[str, Versioned[wire.ExecutionRecord]] = {}
        self.by_job: dict[str, set[str]] = defaultdict(set)
        self.by_node: dict[str, set[str]] = defaultdict(set)
        self.waiting: set[str] = set()
        self.waiting_for_room: set[str] = set()  # of those, the jobs that wait for capacity
        self.by_name: dict[tuple[str, str], str] = {}  # (namespace, name) -> job id
        self.nodes: dict[str, Versioned[wire.NodeRecord]] = {}
        self._creating: dict[str, asyncio.Future[None]] = {}
        self._job_creates: dict[str, _JobCreate] = {}
        self._showing: dict[str, set[asyncio.Future[None]]] = defaultdict(set)  # by job id
        self._jobs_kv: KV | None = None
        self._execs_kv: KV | None = None
        self._nodes_kv: KV | None = None
        self._children = Supervisor("state-mirror")
        self.on_node_change: Callable[[str], None] = lambda node_id: None

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._jobs_kv = await self._bus.kv(subjects.JOBS_BUCKET, republish=subjects.JOBS_REPUBLISH)
        self._execs_kv = await self._bus.kv(
            subjects.EXECUTIONS_BUCKET, republish=subjects.EXECUTIONS_REPUBLISH
        )
        self._nodes_kv = await self._bus.kv(subjects.NODES_BUCKET)
        ready = [asyncio.Event() for _ in range(3)]
        await self._children.start()
        self._children.spawn(self._follow(self._jobs_kv, self._apply_job, ready[0]))
        self._children.spawn(self._follow(self._execs_kv, self._apply_execution, ready[1]))
        self._children.spawn(self._follow(self._nodes_kv, self._apply_node, ready[2]))
        await asyncio.gather(*(e.wait() for e in ready))

    async def stop(self) -> None:
        await self._children.stop()

    async def _follow(self, kv: KV, apply: Callable[[Entry], None], ready: asyncio.Event) -> None:
        while True:
            try:
                async for entry in kv.watch(">"):
                    if entry is None:
                        ready.set()
                    else:
                        apply(entry)
            except asyncio.CancelledError:
                raise
            except Exception:  # the watch dies with the connection; resume from KV
                log.warning("watch on %s failed; re-subscribing", kv.bucket, exc_info=True)
                await asyncio.sleep(0.5)

    # ---- applying watched entries (idempotent: older revisions are ignored) ------------------

    def _apply_job(self, entry: Entry) -> None:
        job_id = entry.key.split(".", 1)[-1]
        known = self.jobs.get(job_id)
        if known is not None and known.revision >= entry.revision:
            return
        if entry.value is None:
            self._forget_job(job_id)
            return
        record = _decode(entry, wire.JobRecord)
        if record is not None:
            self._set_job(record, entry.revision)

    def _apply_execution(self, entry: Entry) -> None:
        job_id, _, exec_id = entry.key.partition(".")
        known = self.executions.get(exec_id)
        if known is not None and known.revision >= entry.revision:
            return
        if entry.value is None:
            self._forget_execution(job_id, exec_id)
            return
        record = _decode(entry, wire.ExecutionRecord)
        if record is not None:
            self._set_execution(record, entry.revision)

    def _apply_node(self, entry: Entry) -> None:
        known = self.nodes.get(entry.key)
        if known is not None and known.revision >= entry.revision:
            return
        if entry.value is None:
            self.nodes.pop(entry.key, None)
            self.on_node_change(entry.key)
            return
        record = _decode(entry, wire.NodeRecord)
        if record is not None:
            self.nodes[entry.key] = Versioned(record, entry.revision)
            self.on_node_change(entry.key)

    def _set_job(self, record: wire.JobRecord, revision: int) -> None:
        self.jobs[record.id] = Versioned(record, revision)
        self.by_name[(record.namespace, record.name)] = record.id
        # Jobs that may fit somewhere new when a node joins or capacity frees up: kept as
        # an index so that event costs O(waiting jobs), not O(every job ever submitted). A
        # batch job waiting for room for some partitions while others run is `Running` with
        # `queued_since` set: nothing else would wake it when room frees up.
        live = record.state not in wire.TERMINAL_JOB_STATES
        if record.state == "Queued" or (record.queued_since and live):
            self.waiting_for_room.add(record.id)
        else:
            self.waiting_for_room.discard(record.id)
        if record.id in self.waiting_for_room or (record.type == "daemon" and live):
            self.waiting.add(record.id)
        else:
            self.waiting.discard(record.id)

    def _forget_job(self, job_id: str) -> None:
        gone = self.jobs.pop(job_id, None)
        self.waiting.discard(job_id)
        self.waiting_for_room.discard(job_id)
        if gone is not None:
            self.by_name.pop((gone.value.namespace, gone.value.name), None)

    def _forget_execution(self, job_id: str, exec_id: str) -> None:
        gone = self.executions.pop(exec_id, None)
        self.by_job[job_id].discard(exec_id)
        if gone is not None:
            self.by_node[gone.value.node_id].discard(exec_id)

    def _set_execution(self, record: wire.ExecutionRecord, revision: int) -> None:
        self.executions[record.id] = Versioned(record, revision)
        self.by_job[record.job_id].add(record.id)
        if record.live:
            self.by_node[record.node_id].add(record.id)
        else:
            self.by_node[record.node_id].discard(record.id)

    def live_on(self, node_id: str) -> list[wire.ExecutionRecord]:
        """Executions the orchestrator believes are live on a node."""
        ids = self.by_node.get(node_id, ())
        return [self.executions[i].value for i in ids if i in self.executions]

    # ---- reads --------------------------------------------------------------------------------

    def executions_of(
        self, job_id: str, nodes: frozenset[str] | None = None
    ) -> list[wire.ExecutionRecord]:
        """The job's executions, oldest first; with `nodes`, only those placed on them."""
        out = [
            self.executions[i].value for i in self.by_job.get(job_id, ()) if i in self.executions
        ]
        if nodes is not None:
            out = [e for e in out if e.node_id in nodes]
        out.sort(key=lambda e: (e.created_at, e.id))
        return out

    def job(self, job_id: str) -> wire.JobRecord | None:
        v = self.jobs.get(job_id)
        return v.value if v else None

    # ---- CAS writes ---------------------------------------------------------------------------

    async def create_job(self, record: wire.JobRecord) -> None:
        assert self._jobs_kv is not None
        rev = await self._jobs_kv.create(
            subjects.job_key(record.namespace, record.id), wire.encode(record)
        )
        pending = self._job_creates.get(record.id)
        if pending is not None and pending.record is record:
            pending.revision = rev
        known = self.jobs.get(record.id)
        if known is None or known.revision < rev:  # the watch's echo may have come first
            self._set_job(record, rev)

    @contextlib.asynccontextmanager
    async def creating_job(self, record: wire.JobRecord) -> AsyncIterator[None]:
        """Show a new job before it is stored, for the length of the block that creates it
        (with `create_job(record)`).

        The leader evaluates the job (and offers its work) while the create is in flight,
        instead of one KV round trip later. Until the block ends, `job_settled()`, `holds()` and
        a job CAS wait for it; so the block should also record the job's first history line,
        which then comes before any line about its executions. If the create failed, the job
        is taken back (or what the mirror showed before is put back), and `holds()` says so,
        for the evaluation to withdraw what it offered. One create of an id at a time: a second
        one is a Conflict."""
        if record.id in self._job_creates:
            raise Conflict(f"job {record.id} is being submitted already")
        before = self.jobs.get(record.id)  # the API only creates jobs it does not know
        self._set_job(record, 0)
        shown = self.jobs[record.id]
        pending = self._job_creates[record.id] = _JobCreate(
            record, asyncio.get_running_loop().create_future()
        )
        try:
            yield
        finally:
            # Stored is stored, even if the block failed after the create (e.g. cancelled).
            if not pending.revision and self.jobs.get(record.id) is shown:
                if before is None:
                    self._forget_job(record.id)
                else:
                    self._set_job(before.value, before.revision)
            del self._job_creates[record.id]
            pending.done.set_result(pending.revision)

    async def job_settled(self, job_id: str) -> None:
        """Return once no `creating_job()` of this job is in flight (another may begin as one
        ends: a submit that waited for a failed one may try again at once)."""
        while (pending := self._job_creates.get(job_id)) is not None:
            await asyncio.shield(pending.done)

    async def holds(self, job: wire.JobRecord) -> bool:
        """Whether `job`, as read for a decision (perhaps while its create was in flight), is
        the job stored: False if its create failed or another submit's record won. A create
        whose acknowledgement was lost may have stored it all the same: then the watch shows
        it, and it counts as stored."""
        pending = self._job_creates.get(job.id)
        if pending is not None:
            await asyncio.shield(pending.done)
        known = self.jobs.get(job.id)
        return (
            known is not None
            and known.revision > 0
            and (known.value.version, known.value.created_at) == (job.version, job.created_at)
            and known.value.spec == job.spec
        )

    async def fetch_job(self, namespace: str, job_id: str) -> wire.JobRecord | None:
        """Read a job from KV (newer than the mirror, e.g. written by another orchestrator)."""
        assert self._jobs_kv is not None
        entry = await self._jobs_kv.get(subjects.job_key(namespace, job_id))
        if entry is None or entry.value is None:
            return None
        self._apply_job(entry)
        return _decode(entry, wire.JobRecord)

    async def update_job(self, record: wire.JobRecord) -> None:
        """CAS against the revision in the mirror; Conflict (after a re-read) if it moved."""
        assert self._jobs_kv is not None
        key = subjects.job_key(record.namespace, record.id)
        known = self.jobs.get(record.id)
        revision = known.revision if known is not None else 0
        pending = self._job_creates.get(record.id)
        if known is not None and revision == 0 and pending is not None:
            # Decided on the job as shown while its create was in flight: CAS on the revision
            # that create stored, so a change made since then is not overwritten.
            revision = await asyncio.shield(pending.done)
        if not revision:
            raise Conflict(f"job {record.id} is not stored")
        try:
            rev = await self._jobs_kv.update(key, wire.encode(record), revision)
        except Conflict:
            await self._reread(self._jobs_kv, key, self._apply_job)
            raise
        self._set_job(record, rev)

    async def create_execution(self, record: wire.ExecutionRecord) -> None:
        """Create an execution record. The planner offers it to its node while this write is
        in flight, so `creating()`/`settled()` let the node's first reports wait for it."""
        assert self._execs_kv is not None
        key = subjects.execution_key(record.job_id, record.id)
        done = self._creating[record.id] = asyncio.get_running_loop().create_future()
        try:
            rev = await self._execs_kv.create(key, wire.encode(record))
            known = self.executions.get(record.id)
            if known is None or known.revision < rev:  # not over a later change, or one shown
                self._set_execution(record, rev)
        finally:
            del self._creating[record.id]
            done.set_result(None)

    async def refresh_execution(
        self, job_id: str, execution_id: str
    ) -> Versioned[wire.ExecutionRecord] | None:
        """The execution as KV holds it now: for a record the watch may not have shown yet
        (a new leader's mirror can trail the writes of the one before)."""
        assert self._execs_kv is not None
        await self._reread(
            self._execs_kv, subjects.execution_key(job_id, execution_id), self._apply_execution
        )
        return self.executions.get(execution_id)

    def creating(self, execution_id: str) -> bool:
        return execution_id in self._creating

    async def settled(self, execution_id: str) -> None:
        """Return once no create of this execution is in flight."""
        done = self._creating.get(execution_id)
        if done is not None:
            await asyncio.shield(done)

    async def delete_execution(self, record: wire.ExecutionRecord) -> bool:
        """Delete an execution record that is still as the mirror holds it (nothing was
        reported on it since); False if it has moved on, which then stays."""
        assert self._execs_kv is not None
        known = self.executions.get(record.id)
        if known is None or known.value != record:
            return False
        key = subjects.execution_key(record.job_id, record.id)
        try:
            await self._execs_kv.delete(key, known.revision)
        except Conflict:
            await self._reread(self._execs_kv, key, self._apply_execution)
            return False
        self._forget_execution(record.job_id, record.id)
        return True

    @contextlib.asynccontextmanager
    async def showing(self, record: wire.ExecutionRecord) -> AsyncIterator[None]:
        """Show `record` before it is written, for the length of the block that writes it.

        For a change that is durable elsewhere already (a node's report in SHOAL_UPDATES, acked
        only once applied): the job can be evaluated on it while its write is in flight. The
        write inside compares against the revision from before (pass it). If the block fails, the
        record shown is taken back (unless a re-read replaced it); `settled_job()` waits for
        every such block of a job to end."""
        before = self.executions.get(record.id)
        self._set_execution(record, before.revision if before else 0)
        shown = self.executions[record.id]
        done = asyncio.get_running_loop().create_future()
        self._showing[record.job_id].add(done)
        try:
            yield
        except BaseException:
            if before is not None and self.executions.get(record.id) is shown:
                self._set_execution(before.value, before.revision)
            raise
        finally:
            waiting = self._showing[record.job_id]
            waiting.discard(done)
            if not waiting:
                del self._showing[record.job_id]
            done.set_result(None)

    async def settled_job(self, job_id: str) -> None:
        """Return once no execution of this job is being shown ahead of its write."""
        for done in list(self._showing.get(job_id, ())):
            await asyncio.shield(done)

    async def update_execution(
        self, record: wire.ExecutionRecord, revision: int | None = None
    ) -> None:
        """CAS against `revision`, by default the mirror's; Conflict (after a re-read) if the
        key moved."""
        assert self._execs_kv is not None
        key = subjects.execution_key(record.job_id, record.id)
        if revision is None:
            known = self.executions.get(record.id)
            revision = known.revision if known else 0
        try:
            rev = await self._execs_kv.update(key, wire.encode(record), revision)
        except Conflict:
            await self._reread(self._execs_kv, key, self._apply_execution)
            raise
        self._set_execution(record, rev)

    async def put_node(self, record: wire.NodeRecord) -> None:
        assert self._nodes_kv is not None
        known = self.nodes.get(record.info.id)
        try:
            rev = await self._nodes_kv.update(
                record.info.id, wire.encode(record), known.revision if known else 0
            )
        except Conflict:
            await self._reread(self._nodes_kv, record.info.id, self._apply_node)
            raise
        self.nodes[record.info.id] = Versioned(record, rev)
        self.on_node_change(record.info.id)

    @staticmethod
    async def _reread(kv: KV, key: str, apply: Callable[[Entry], None]) -> None:
        entry = await kv.get(key)
        if entry is not None:
            apply(entry)


@dataclass(slots=True)
class _JobCreate:
    """A `creating_job()` block: its record, and the revision its create stored (0: none)."""

    record: wire.JobRecord
    done: asyncio.Future[int]
    revision: int = 0


def _decode(entry: Entry, kind: type[R]) -> R | None:
    try:
        return wire.decode(entry.value or b"", kind, what=entry.key)
    except InvalidSpec:  # a foreign or corrupt value must not stop the watch
        log.warning("ignoring undecodable KV value at %s", entry.key)
        return None
