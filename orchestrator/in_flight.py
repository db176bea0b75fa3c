"""Writes the state mirror shows before KV has stored them, and the waits that keep others behind.

The rule: a write may show in the mirror before KV acknowledges it only for the length of the
block that makes it. Whatever must not act on it while it is unstored (a CAS on the same record,
a decision that the job is the one stored, a history line that must follow the write's own)
waits for that block to end; a block that fails takes back what it showed.

Three writes are shown ahead, each waited for by a name of its own:

- a job's create, in `creating_job(record)`: the API's submit, so that the leader evaluates the
  job (and offers its work) meanwhile. Waited for by `wait_job_create(job_id)`,
  `is_stored(job)` and a CAS on the job.
- an execution's create, in `creating_execution(id)`: the planner's offer, which the node may
  report on before the create is acknowledged. Waited for by `wait_execution_create(id)`
  (`is_creating_execution(id)` says whether there is one).
- an execution's final report, in `showing_execution(record)`: the update applier's write, so
  that the job is evaluated on it meanwhile. Waited for by `wait_shown_executions(job_id)`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared import wire
from shared.errors import Conflict
from shared.memory import shrink

if TYPE_CHECKING:  # the mirror owns an InFlight and hands it itself
    from orchestrator.state import StateMirror


@dataclass(slots=True)
class _JobCreate:
    """A `creating_job()` block: its record, and the revision its create stored (0: none)."""

    record: wire.JobRecord
    done: asyncio.Future[int]
    revision: int = 0


class InFlight:
    """The mirror's writes in flight that it already shows, and the waits for them."""

    def __init__(self, mirror: StateMirror) -> None:
        self._mirror = mirror
        self._job_creates: dict[str, _JobCreate] = {}
        self._execution_creates: dict[str, asyncio.Future[None]] = {}
        self._shown: dict[str, set[asyncio.Future[None]]] = defaultdict(set)  # by job id

    def compact(self) -> None:
        """Rebuild the tables at the size of what is in flight now (after a burst)."""
        shrink(self._job_creates, self._execution_creates, self._shown)

    # ---- a job's create ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def creating_job(self, record: wire.JobRecord) -> AsyncIterator[None]:
        """Show a new job before it is stored, for the length of the block that creates it
        (with `StateMirror.create_job(record)`).

        The leader evaluates the job (and offers its work) while the create is in flight,
        instead of one KV round trip later. Until the block ends, `wait_job_create()`,
        `is_stored()` and a job CAS wait for it; so the block should also record the job's
        first history line, which then comes before any line about its executions. If the
        create failed, the job is taken back (or what the mirror showed before is put back),
        and `is_stored()` says so, for the evaluation to withdraw what it offered. One create
        of an id at a time: a second one is a Conflict."""
        if record.id in self._job_creates:
            raise Conflict(f"job {record.id} is being submitted already")
        mirror = self._mirror
        before = mirror.jobs.get(record.id)  # the API only creates jobs it does not know
        mirror.show_job(record, 0)
        shown = mirror.jobs[record.id]
        pending = self._job_creates[record.id] = _JobCreate(
            record, asyncio.get_running_loop().create_future()
        )
        try:
            yield
        finally:
            # Stored is stored, even if the block failed after the create (e.g. cancelled).
            if not pending.revision and mirror.jobs.get(record.id) is shown:
                if before is None:
                    mirror.drop_job(record.id)
                else:
                    mirror.show_job(before.value, before.revision)
            del self._job_creates[record.id]
            pending.done.set_result(pending.revision)

    def job_created(self, record: wire.JobRecord, revision: int) -> None:
        """`record`'s create stored it at `revision` (what a CAS decided meanwhile compares
        against)."""
        pending = self._job_creates.get(record.id)
        if pending is not None and pending.record is record:
            pending.revision = revision

    async def stored_revision(self, job_id: str) -> int:
        """The revision the job's create in flight stores, once it is over (0: it failed, or
        none is in flight)."""
        pending = self._job_creates.get(job_id)
        if pending is None:
            return 0
        return await asyncio.shield(pending.done)

    async def wait_job_create(self, job_id: str) -> None:
        """Return once no `creating_job()` of this job is in flight (another may begin as one
        ends: a submit that waited for a failed one may try again at once)."""
        while (pending := self._job_creates.get(job_id)) is not None:
            await asyncio.shield(pending.done)

    async def is_stored(self, job: wire.JobRecord) -> bool:
        """Whether `job`, as read for a decision (perhaps while its create was in flight), is
        the job stored: False if its create failed or another submit's record won. A create
        whose acknowledgement was lost may have stored it all the same: then the watch shows
        it, and it counts as stored."""
        pending = self._job_creates.get(job.id)
        if pending is not None:
            await asyncio.shield(pending.done)
        known = self._mirror.jobs.get(job.id)
        return (
            known is not None
            and known.revision > 0
            and (known.value.version, known.value.created_at) == (job.version, job.created_at)
            and known.value.spec == job.spec
        )

    # ---- an execution's create ---------------------------------------------------------------

    @contextlib.contextmanager
    def creating_execution(self, execution_id: str) -> Iterator[None]:
        """For the length of the block that creates the execution's record (the planner
        offers it to its node meanwhile, so the node's first reports may come first)."""
        done = self._execution_creates[execution_id] = asyncio.get_running_loop().create_future()
        try:
            yield
        finally:
            del self._execution_creates[execution_id]
            done.set_result(None)

    def is_creating_execution(self, execution_id: str) -> bool:
        return execution_id in self._execution_creates

    async def wait_execution_create(self, execution_id: str) -> None:
        """Return once no create of this execution is in flight."""
        done = self._execution_creates.get(execution_id)
        if done is not None:
            await asyncio.shield(done)

    # ---- an execution's change, durable elsewhere already ------------------------------------

    @contextlib.asynccontextmanager
    async def showing_execution(self, record: wire.ExecutionRecord) -> AsyncIterator[None]:
        """Show `record` before it is written, for the length of the block that writes it.

        For a change that is durable elsewhere already (a node's report in SHOAL_UPDATES, acked
        only once applied): the job can be evaluated on it while its write is in flight. The
        write inside compares against the revision from before (pass it). If the block fails,
        the record shown is taken back (unless a re-read replaced it);
        `wait_shown_executions()` waits for every such block of a job to end."""
        mirror = self._mirror
        before = mirror.executions.get(record.id)
        mirror.show_execution(record, before.revision if before else 0)
        shown = mirror.executions[record.id]
        done = asyncio.get_running_loop().create_future()
        self._shown[record.job_id].add(done)
        try:
            yield
        except BaseException:
            if before is not None and mirror.executions.get(record.id) is shown:
                mirror.show_execution(before.value, before.revision)
            raise
        finally:
            blocks = self._shown[record.job_id]
            blocks.discard(done)
            if not blocks:
                del self._shown[record.job_id]
            done.set_result(None)

    async def wait_shown_executions(self, job_id: str) -> None:
        """Return once no execution of this job is shown ahead of its write."""
        for done in list(self._shown.get(job_id, ())):
            await asyncio.shield(done)
