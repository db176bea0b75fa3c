"""The orchestrator's in-memory mirror of the JetStream KV state, and its CAS writers.

KV is the truth. Every orchestrator watches the three buckets and keeps decoded records in
memory, so API reads and scheduling decisions never wait on NATS. Writes are compare-and-swap
on the revision the mirror holds; a successful write is applied locally at once (the watch
echoes it later with the same revision, which is then ignored), a lost CAS re-reads the key and
raises Conflict so the caller re-decides. A few writes are shown before KV has stored them:
`in_flight.py` holds that protocol and its waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from orchestrator.buckets import KV, Buckets
from orchestrator.in_flight import InFlight
from orchestrator.mirror_records import CREATED, MirrorRecords, Versioned
from shared import subjects, wire
from shared.bus import Entry
from shared.errors import Conflict, InvalidSpec, NotFound, ShoalError, Unavailable
from shared.lifecycle import Supervisor

log = logging.getLogger(__name__)

R = TypeVar("R")

__all__ = ["StateMirror", "Versioned"]

# At start, the unsettled jobs' executions are read job by job, or the whole bucket once if
# that costs less: one job's read (a consumer made and removed) costs about what replaying
# this many stored entries does (measured: docs/benchmarks.md, "A restart after a burst").
ONE_READ_COSTS = 50
LOAD_CONCURRENCY = 64
# And never more than this many reads: each leaves its consumer on the server until it lapses
# (`inactive_threshold`), so a start of thousands would leave thousands there at once.
LOAD_EACH_UP_TO = 1024
READ_KEPT = 30.0  # seconds a settled job's executions stay after a read (one job's at most)


def _is_token(value: str) -> bool:
    try:
        subjects.check_token(value)
    except ValueError:
        return False
    return True


class StateMirror(MirrorRecords):
    """Jobs, executions and nodes as last seen in KV, kept current by watches."""

    def __init__(self, buckets: Buckets) -> None:
        super().__init__()
        self._buckets = buckets
        self.in_flight = InFlight(self)
        self._jobs_kv: KV | None = None
        self._execs_kv: KV | None = None
        self._nodes_kv: KV | None = None
        self._children = Supervisor("state-mirror")
        # A settled job's executions as last read from KV, by (job, revision held).
        self._read: tuple[tuple[str, int], list[wire.ExecutionRecord]] | None = None
        self._forget_read: asyncio.TimerHandle | None = None

    def _unsettled(self, record: wire.JobRecord) -> None:
        # Its old versions' executions, for job.executions; scheduling needs only the new one's.
        self._children.spawn(self.load_executions(record.namespace, record.id))

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        buckets = self._buckets
        self._jobs_kv = await buckets.kv(subjects.JOBS_BUCKET, republish=subjects.JOBS_REPUBLISH)
        self._execs_kv = await buckets.kv(
            subjects.EXECUTIONS_BUCKET, republish=subjects.EXECUTIONS_REPUBLISH
        )
        self._nodes_kv = await buckets.kv(subjects.NODES_BUCKET)
        ready = [asyncio.Event() for _ in range(3)]
        await self._children.start()
        # The executions after this revision are followed as they come. Of those before it,
        # only the unsettled jobs' are read: a restart over months of settled jobs reads their
        # records and none of their executions.
        since = await self._execs_kv.last_revision() + 1
        stored = await self._execs_kv.entries()
        self.start_replay()
        self._children.spawn(
            self._follow(self._jobs_kv, self._apply_job, ready[0], unseen=self._drop_unseen_jobs)
        )
        self._children.spawn(self._follow(self._nodes_kv, self._apply_node, ready[2]))
        await ready[0].wait()
        self.end_replay()
        unsettled = [v.value for v in self.jobs.values()]
        held = await self._latest_executions(unsettled)
        if held is None and (
            len(unsettled) > LOAD_EACH_UP_TO or len(unsettled) * ONE_READ_COSTS > stored
        ):
            since = 0
        self._children.spawn(
            self._follow(self._execs_kv, self._apply_execution, ready[1], since=since)
        )
        if since and held is not None:
            for entry in held:
                self._apply_execution(entry)
        elif since:
            slots = asyncio.Semaphore(LOAD_CONCURRENCY)

            async def load(job: wire.JobRecord) -> None:
                # Not ready without them: a job whose executions were missing would be placed
                # again.
                async with slots:
                    for delay in (0.2, 0.5, 1.0, 0.0):
                        if await self.load_executions(job.namespace, job.id):
                            return
                        if not delay:
                            raise Unavailable(f"could not read the executions of job {job.id}")
                        await asyncio.sleep(delay)

            await asyncio.gather(*(load(job) for job in unsettled))
        await asyncio.gather(*(e.wait() for e in ready))

    async def _latest_executions(self, unsettled: list[wire.JobRecord]) -> list[Entry] | None:
        """The unsettled jobs' executions in a few batched reads; None where the bucket is
        not read that way."""
        assert self._execs_kv is not None
        if not unsettled:
            return []
        keys = [subjects.execution_key(job.namespace, job.id, "*") for job in unsettled]
        for delay in (0.2, 0.5, 1.0, 0.0):
            try:
                return await self._execs_kv.latest(keys)
            except ShoalError as exc:
                if not delay:
                    raise Unavailable(
                        f"could not read the unsettled jobs' executions: {exc}"
                    ) from exc
                log.warning("reading the unsettled jobs' executions: %s; trying again", exc)
                await asyncio.sleep(delay)
        return None  # (not reached: the last try raises)

    def compact(self) -> None:
        super().compact()
        self.in_flight.compact()

    async def stop(self) -> None:
        await self._children.stop()
        if self._forget_read is not None:
            self._forget_read.cancel()
        self._drop_read()

    async def _follow(
        self,
        kv: KV,
        apply: Callable[[Entry], None],
        ready: asyncio.Event,
        since: int = 0,
        unseen: Callable[[set[str], int], None] | None = None,
    ) -> None:
        """Apply the bucket's entries (with `since`, its writes from that revision on) and
        set `ready` once caught up; a watch that fails resumes where it was. A watch of every
        value that is made again tells `unseen` the keys its replay held and the newest
        revision among them: a key deleted while it was down, whose delete marker is gone by
        now (a purge removes them), is not in them."""
        again = False
        seen: set[str] | None = None
        newest = 0

        def take(entry: Entry | None) -> None:
            nonlocal since, seen, newest
            if entry is None:
                ready.set()
                if seen is not None and unseen is not None:
                    unseen(seen, newest)
                seen = None
                return
            if since:
                since = max(since, entry.revision + 1)
            elif seen is not None:
                seen.add(entry.key)
                newest = max(newest, entry.revision)
            apply(entry)

        while True:
            seen, newest = (set() if again and not since else None), 0
            try:
                await kv.follow(">", take, since=since)
            except asyncio.CancelledError:
                raise
            except Exception:  # the watch dies with the connection; resume from KV
                log.warning("watch on %s failed; re-subscribing", kv.bucket, exc_info=True)
                await asyncio.sleep(0.5)
            again = True

    def _drop_unseen_jobs(self, keys: set[str], newest: int) -> None:
        """Drop the stored jobs a replay of the jobs bucket no longer holds (revisions up to
        `newest`: one stored after the replay began is not in it, and stays)."""
        for job_id, shown in list(self.jobs.items()) + list(self.settled.items()):
            job = shown.value
            if 0 < shown.revision <= newest and subjects.job_key(job.namespace, job_id) not in keys:
                log.info("job %s was deleted while the watch was down: dropping it", job_id)
                self.drop_job(job_id)
                self.forget_executions(job_id)

    # ---- applying watched entries (idempotent: older revisions are ignored) ------------------

    def _apply_job(self, entry: Entry) -> None:
        job_id = entry.key.split(".", 1)[-1]
        known = self.held(job_id)
        if known is not None and known.revision >= entry.revision:
            return
        if entry.value is None:  # purged: its executions go with it (retention.py)
            self.drop_job(job_id)
            self.forget_executions(job_id)
            return
        record = _decode(entry, wire.JobRecord)
        if record is not None:
            self.show_job(record, entry.revision)

    def _apply_execution(self, entry: Entry) -> None:
        _, job_id, exec_id = entry.key.split(".", 2)  # <namespace>.<job-id>.<execution-id>
        if job_id in self.settled:
            return  # its record counts them; KV holds them
        known = self.executions.get(exec_id)
        if known is not None and known.revision >= entry.revision:
            return
        if entry.value is None:
            self._drop_execution(job_id, exec_id)
            return
        record = _decode(entry, wire.ExecutionRecord)
        if record is not None:
            self.show_execution(record, entry.revision)

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

    # ---- reads from KV ----------------------------------------------------------------------

    async def stored_job(self, job: wire.JobRecord) -> wire.JobRecord:
        """The job's whole record: a settled job's as KV holds it (NotFound once purged)."""
        if job.id not in self.settled:
            return job
        stored = await self.fetch_job(job.namespace, job.id)
        if stored is None:
            raise NotFound(f"job {job.id} was purged")
        return stored

    async def load_executions(self, namespace: str, job_id: str) -> bool:
        """Read the job's executions from KV into the mirror; False (logged) if the read
        failed."""
        assert self._execs_kv is not None
        try:
            held = await _current(self._execs_kv, subjects.execution_key(namespace, job_id, "*"))
        except ShoalError as exc:
            log.warning("reading the executions of %s: %s", job_id, exc)
            return False
        for entry in held:
            self._apply_execution(entry)
        return True

    async def stored_executions(self, job: wire.JobRecord) -> list[wire.ExecutionRecord]:
        """The job's executions, oldest first; a settled job's read from KV (not held)."""
        held = self.settled.get(job.id)
        if held is None:
            return self.executions_of(job.id)
        # The last read is kept a little while: `job executions` pages through a job of
        # 100,000 a thousand at a time, and each page would read them all again.
        key = (job.id, held.revision)
        if self._read is not None and self._read[0] == key:
            return self._read[1]
        assert self._execs_kv is not None
        out: list[wire.ExecutionRecord] = []
        for entry in await _current(
            self._execs_kv, subjects.execution_key(job.namespace, job.id, "*")
        ):
            record = _decode(entry, wire.ExecutionRecord) if entry.value else None
            if record is not None and record.job_id == job.id:
                out.append(record)
        out.sort(key=CREATED)
        if self._forget_read is not None:
            self._forget_read.cancel()
        self._read = (key, out)
        self._forget_read = asyncio.get_running_loop().call_later(READ_KEPT, self._drop_read)
        return out

    def _drop_read(self) -> None:
        self._read, self._forget_read = None, None

    # ---- CAS writes ---------------------------------------------------------------------------

    async def create_job(self, record: wire.JobRecord) -> None:
        assert self._jobs_kv is not None
        rev = await self._jobs_kv.create(
            subjects.job_key(record.namespace, record.id), wire.encode(record)
        )
        self.in_flight.job_created(record, rev)
        known = self.jobs.get(record.id)
        if known is None or known.revision < rev:  # the watch's echo may have come first
            self.show_job(record, rev)

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
        known = self.held(record.id)
        revision = known.revision if known is not None else 0
        if known is not None and revision == 0:
            # Decided on the job as shown while its create was in flight: CAS on the revision
            # that create stored, so a change made since then is not overwritten.
            revision = await self.in_flight.stored_revision(record.id)
        if not revision:
            raise Conflict(f"job {record.id} is not stored")
        try:
            rev = await self._jobs_kv.update(key, wire.encode(record), revision)
        except Conflict:
            await self._reread(self._jobs_kv, key, self._apply_job)
            raise
        self.show_job(record, rev)

    async def create_execution(self, record: wire.ExecutionRecord) -> None:
        """Create an execution record. The planner offers it to its node while this write is
        in flight, so the node's first reports wait for it (`InFlight.creating_execution`)."""
        assert self._execs_kv is not None
        key = subjects.execution_key(record.namespace, record.job_id, record.id)
        with self.in_flight.creating_execution(record.id):
            rev = await self._execs_kv.create(key, wire.encode(record))
            known = self.executions.get(record.id)
            if known is None or known.revision < rev:  # not over a later change, or one shown
                self.show_execution(record, rev)

    async def refresh_execution(
        self, job_id: str, execution_id: str
    ) -> Versioned[wire.ExecutionRecord] | None:
        """The execution as KV holds it now: for a record the watch may not have shown yet
        (a new leader's mirror can trail the writes of the one before). Its key names the
        job's namespace: that of the job as the mirror shows it, else of the execution."""
        assert self._execs_kv is not None
        settled = self.settled.get(job_id)
        if settled is not None:  # as KV holds it; a settled job's executions are not held
            if not _is_token(execution_id):
                return None
            key = subjects.execution_key(settled.value.namespace, job_id, execution_id)
            entry = await self._execs_kv.get(key)
            stored = _decode(entry, wire.ExecutionRecord) if entry and entry.value else None
            if entry is None or stored is None or stored.job_id != job_id:
                return None
            return Versioned(stored, entry.revision)
        job = self.job(job_id)
        known = self.executions.get(execution_id)
        if job is not None:
            namespace = job.namespace
        elif known is not None:
            namespace = known.value.namespace
        elif not (_is_token(job_id) and _is_token(execution_id)):
            return None  # no key is named so: a forged or garbled report
        else:  # neither shown yet: its key, whatever its namespace, from what KV holds
            pattern = subjects.execution_key("*", job_id, execution_id)
            for entry in await _current(self._execs_kv, pattern):
                self._apply_execution(entry)
            return self.executions.get(execution_id)
        key = subjects.execution_key(namespace, job_id, execution_id)
        await self._reread(self._execs_kv, key, self._apply_execution)
        return self.executions.get(execution_id)

    async def delete_execution(self, record: wire.ExecutionRecord) -> bool:
        """Delete an execution record that is still as the mirror holds it (nothing was
        reported on it since); False if it has moved on, which then stays."""
        assert self._execs_kv is not None
        known = self.executions.get(record.id)
        if known is None or known.value != record:
            return False
        key = subjects.execution_key(record.namespace, record.job_id, record.id)
        try:
            await self._execs_kv.delete(key, known.revision)
        except Conflict:
            await self._reread(self._execs_kv, key, self._apply_execution)
            return False
        self._drop_execution(record.job_id, record.id)
        return True

    async def update_execution(
        self, record: wire.ExecutionRecord, revision: int | None = None
    ) -> None:
        """CAS against `revision`, by default the mirror's; Conflict (after a re-read) if the
        key moved."""
        assert self._execs_kv is not None
        key = subjects.execution_key(record.namespace, record.job_id, record.id)
        if revision is None:
            known = self.executions.get(record.id)
            revision = known.revision if known else 0
        try:
            rev = await self._execs_kv.update(key, wire.encode(record), revision)
        except Conflict:
            await self._reread(self._execs_kv, key, self._apply_execution)
            raise
        self.show_execution(record, rev)

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

    async def delete_node(self, node_id: str, revision: int) -> None:
        """Delete the node's record if KV still holds it at `revision`; Conflict (after a
        re-read) if it moved."""
        assert self._nodes_kv is not None
        try:
            await self._nodes_kv.delete(node_id, revision)
        except Conflict:
            await self._reread(self._nodes_kv, node_id, self._apply_node)
            raise
        self.nodes.pop(node_id, None)
        self.on_node_change(node_id)

    @staticmethod
    async def _reread(kv: KV, key: str, apply: Callable[[Entry], None]) -> None:
        entry = await kv.get(key)
        if entry is not None:
            apply(entry)


def _decode(entry: Entry, kind: type[R]) -> R | None:
    try:
        return wire.decode(entry.value or b"", kind, what=entry.key)
    except InvalidSpec:  # a foreign or corrupt value must not stop the watch
        log.warning("ignoring undecodable KV value at %s", entry.key)
        return None


async def _current(kv: KV, pattern: str) -> list[Entry]:
    """What the bucket holds under `pattern` now (a watch read until it has caught up)."""
    entries = kv.watch(pattern)
    out: list[Entry] = []
    try:
        async for entry in entries:
            if entry is None:
                break
            out.append(entry)
    finally:
        closing = getattr(entries, "aclose", None)
        if closing is not None:
            await closing()
    return out
