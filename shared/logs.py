"""Reading a job's output from SHOAL_LOGS: one version's executions, and, when following, until
that version has ended and every execution's output has been read.

The log stream holds every version's output under `shoal.v1.ns.<ns>.logs.<job-id>.>`, and a
log subject names the node and the execution, not its version: which version an execution ran
is told by the API's view of that version (`job.describe`) and by the execution records the
server republishes on `shoal.v1.ns.<ns>.state.<job-id>.>`. A line is an execution's only when
its subject names the node the execution was placed on: any node may publish under its own
name, never under another's. When the logs are complete is docs/protocol.md's
rule: an execution that ended by itself shipped all its output before its end was stored; a
cancelled one ships its last chunks after, before its node stops listing it as running.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from shared import subjects, wire
from shared.bus import Bus, Inbox, StreamMessage
from shared.errors import NotFound
from shared.views import StoredJob

log = logging.getLogger(__name__)

# Seconds without a record after which the API is asked whether the version has ended (a
# record may have been missed: a reconnect, or a server that does not republish).
SILENCE = 2.0
# A cancelled execution's last output arrives after its record says so: how often the nodes'
# heartbeats are looked at until its node no longer runs it, and for how long at most.
SETTLE_POLL = 0.2
SETTLE_LIMIT = 10.0
# A cancellation older than this shipped its last output long ago: no node is asked about it.
RECENT = 60.0
# A whole job id, not a prefix or a name: nothing to resolve.
_FULL_ID = re.compile(r"^j-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True, slots=True)
class LogLine:
    """A chunk of output from one execution's stdout or stderr (not always a whole line: a
    chunk can end in the middle of a line or of a UTF-8 character)."""

    execution_id: str
    stream: str
    data: bytes
    partition: int = 0
    node_id: str = ""
    version: int = 0


class Api(Protocol):
    """What reading logs asks the API (ShoalClient has it)."""

    async def describe(self, job_id: str, version: int = 0) -> wire.JobView: ...

    async def node(self, node_id: str) -> wire.NodeView: ...

    async def versions(self, job_id: str) -> list[wire.JobVersion]: ...

    async def executions(self, job_id: str) -> list[wire.ExecutionView]: ...


@dataclass(slots=True)
class _Ran:
    """What is known of one execution: the version it ran, where, and how it is now."""

    version: int
    partition: int
    node_id: str
    state: str
    updated_at: float


class JobLogs:
    """One read of a job's logs (`ShoalClient.logs`): `lines()` yields them in stream order.

    `version` 0 is the current version; when following, also the versions submitted while
    following (a job updated meanwhile goes on showing its newest version's output). Any
    other number is that version alone. `execution_id` reads one execution, of any version.
    """

    def __init__(
        self,
        bus: Bus,
        api: Api,
        job_id: str,
        *,
        version: int = 0,
        follow: bool = False,
        execution_id: str = "",
        namespace: str = "default",
        node_id: str = "",
    ) -> None:
        """`node_id`: the node `execution_id` was placed on, when the caller knows it."""
        self._bus = bus
        self._api = api
        self._job_id = job_id
        self._namespace = namespace
        self._node_id = node_id
        self._explicit = version
        self._target = version
        self._follow = follow
        self._execution_id = execution_id
        self._ran: dict[str, _Ran] = {}
        self._foreign: set[str] = set()  # executions of other versions
        self._complete = True  # every execution of the version is in _ran
        self._by_time_done = False
        self._described_at = 0.0  # monotonic time the last view of the version was asked for
        self._job_version = 0  # the job's current version and state, as last seen
        self._job_state = ""

    async def lines(self) -> AsyncGenerator[LogLine, None]:
        if self._execution_id and not self._follow and _FULL_ID.match(self._job_id):
            # One execution's stored output (`job get` asks for each): no view needed.
            node = self._node_id or "*"
            subject = subjects.logs(self._namespace, self._job_id, node, self._execution_id, "*")
            async for msg in self._bus.replay(subjects.LOGS_STREAM, subject):
                yield self._make(msg, None)
            return
        current = await self._api.describe(self._job_id)
        self._job_id, self._namespace = current.id, current.namespace
        subject = (
            subjects.logs(current.namespace, current.id, "*", self._execution_id, "*")
            if self._execution_id
            else subjects.logs_of_job(current.namespace, current.id)
        )
        if not self._follow:
            self._target = self._explicit or current.version
            await self._refresh(current)
            async for msg in self._bus.replay(subjects.LOGS_STREAM, subject):
                if (line := await self._line(msg, time.monotonic())) is not None:
                    yield line
            return
        inbox = await self._bus.subscription(subjects.state_of_job(current.namespace, current.id))
        try:
            current = await self._api.describe(current.id)  # once listening: nothing unseen
            self._target = self._explicit or current.version
            await self._refresh(current)
            async for line in self._following(subject, inbox):
                yield line
        finally:
            await inbox.close()

    # ---- following -----------------------------------------------------------------------

    async def _following(self, subject: str, inbox: Inbox) -> AsyncIterator[LogLine]:
        """Stored output, then new output as it is stored, until the version has ended; then
        whatever was stored and not yet delivered."""
        queue: asyncio.Queue[tuple[float, StreamMessage] | Exception | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for msg in self._bus.replay(subjects.LOGS_STREAM, subject, follow=True):
                    queue.put_nowait((time.monotonic(), msg))
            except Exception as exc:  # handed to the reader, which raises it
                queue.put_nowait(exc)

        async def watch() -> None:
            try:
                await self._until_ended(inbox)
                queue.put_nowait(None)
            except Exception as exc:
                queue.put_nowait(exc)

        pumping = asyncio.create_task(pump(), name=f"logs-{self._job_id}")
        watching = asyncio.create_task(watch(), name=f"logs-end-{self._job_id}")
        last = 0  # stream sequence of the last message taken
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                last = item[1].position()[0]
                if (line := await self._line(item[1], item[0])) is not None:
                    yield line
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)
            while not queue.empty():
                item = queue.get_nowait()
                if isinstance(item, tuple):
                    last = item[1].position()[0]
                    if (line := await self._line(item[1], item[0])) is not None:
                        yield line
            # Everything the version will ever print is stored now: read it to its end.
            after = self._bus.replay(subjects.LOGS_STREAM, subject, after=last)
            async for msg in after:
                if (line := await self._line(msg, time.monotonic())) is not None:
                    yield line
        finally:
            for task in (pumping, watching):
                task.cancel()
            await asyncio.gather(pumping, watching, return_exceptions=True)

    async def _until_ended(self, inbox: Inbox) -> None:
        """Returns once what is read has ended: its executions are not live, and a cancelled
        one's node has stopped it (it ships its last output first)."""
        stored = StoredJob(self._job_id)
        while True:
            if self._over():
                cancelled = await self._confirm_end()
                if cancelled is not None:
                    await self._settle(cancelled)
                    return
            msg = await inbox.next(timeout=SILENCE)
            if msg is None:
                await self._refresh(await self._api.describe(self._job_id))
                continue
            while msg is not None:
                stored.add(msg)
                msg = await inbox.next(timeout=0)
            for record in stored.executions.values():
                self._seen_execution(record)
            stored.executions.clear()
            if stored.job is not None:
                self._seen_job(stored.job.version, stored.job.state)

    def _over(self) -> bool:
        """Whether the last records say that what is read has ended (to be confirmed)."""
        if self._execution_id:
            ran = self._ran.get(self._execution_id)
            return ran is not None and ran.state not in wire.LIVE_COMPUTE_STATES
        if self._job_state in wire.TERMINAL_JOB_STATES:
            return True
        return bool(self._explicit) and self._job_version > self._target

    async def _confirm_end(self) -> dict[str, _Ran] | None:
        """The API's word: None while something read is live, else the executions cancelled
        recently (their last output may still be on its way)."""
        current = await self._api.describe(self._job_id)
        await self._refresh(current)
        if not self._over():
            return None
        if self._execution_id:
            ran = self._ran[self._execution_id]
            return {self._execution_id: ran} if ran.state == "cancelled" else {}
        view = current
        if current.version != self._target and self._explicit:
            view = await self._api.describe(self._job_id, self._target)
            self._learn(view)
        counts = view.execution_counts or {e.compute_state: 1 for e in view.executions}
        if any(counts.get(state, 0) for state in wire.LIVE_COMPUTE_STATES):
            return None
        recent = time.time() - RECENT
        return {
            eid: r
            for eid, r in self._ran.items()
            if r.state == "cancelled" and r.updated_at > recent and self._accepts(r.version)
        }

    async def _settle(self, cancelled: dict[str, _Ran]) -> None:
        """Until every node of these executions has heartbeated since they were cancelled
        without listing them as running (or is gone, or SETTLE_LIMIT has passed): a node
        ships a task's last output before it lets the task go."""
        waiting = {(r.node_id, r.updated_at) for r in cancelled.values() if r.node_id}
        ids = set(cancelled)
        deadline = time.monotonic() + SETTLE_LIMIT
        while waiting:
            # Only these nodes: the whole list is pages of a thousand on a large fleet.
            still: set[tuple[str, float]] = set()
            for node_id, at in waiting:
                try:
                    node = await self._api.node(node_id)
                except NotFound:  # removed: it runs nothing any more
                    continue
                if node.connection == "CONNECTED" and (
                    node.last_seen <= at or ids & set(node.running)
                ):
                    still.add((node_id, at))
            waiting = still
            if not waiting or time.monotonic() > deadline:
                break
            await asyncio.sleep(SETTLE_POLL)
        if waiting:
            log.info("job %s: nodes %s still run cancelled executions", self._job_id, waiting)

    # ---- which version an execution ran -----------------------------------------------------

    def _accepts(self, version: int) -> bool:
        if self._explicit or not self._follow:
            return version == self._target
        return version >= self._target

    def _seen_job(self, version: int, state: str) -> None:
        """The job's version and state, never going back to what an answer from a mirror
        that trails the records still shows."""
        if version < self._job_version:
            return
        if version == self._job_version and self._job_state in wire.TERMINAL_JOB_STATES:
            return
        self._job_version, self._job_state = version, state

    async def _refresh(self, current: wire.JobView) -> None:
        """Learn from the current view, and from the read version's when that is another."""
        self._described_at = time.monotonic()
        self._seen_job(current.version, current.state)
        if self._execution_id and self._execution_id not in {e.id for e in current.executions}:
            for e in await self._api.executions(self._job_id):  # one execution, any version
                if e.id == self._execution_id:
                    self._remember(e, 0)
            return
        if current.version == self._target or not self._explicit:
            self._learn(current)
        else:
            self._learn(await self._api.describe(self._job_id, self._target))

    def _learn(self, view: wire.JobView) -> None:
        """The view's executions all ran its version (the newest 1000 of them)."""
        for e in view.executions:
            self._remember(e, view.version)
        if view.version == self._target:
            self._complete = view.executions_total <= len(view.executions)

    def _remember(self, e: wire.ExecutionView, version: int) -> None:
        version = e.job_version or version  # what the view says, when it says it
        self._ran[e.id] = _Ran(version, e.partition, e.node_id, e.compute_state, e.updated_at)
        if self._accepts(version):
            self._foreign.discard(e.id)

    def _seen_execution(self, record: wire.ExecutionRecord) -> None:
        self._ran[record.id] = _Ran(
            record.job_version,
            record.partition,
            record.node_id,
            record.compute_state,
            record.updated_at,
        )

    async def _line(self, msg: StreamMessage, arrived: float) -> LogLine | None:
        """The message as a line, or None when it is another version's output, or was
        published by a node the execution was not placed on."""
        parts = subjects.log_parts(msg.subject)
        if parts is None:
            return None
        node_id, execution_id, _ = parts
        ran = self._ran.get(execution_id)
        if ran is None and execution_id not in self._foreign and not self._execution_id:
            ran = await self._identify(execution_id, arrived)
        if ran is not None and ran.node_id and ran.node_id != node_id:
            return None
        if self._execution_id:
            return self._make(msg, ran)
        if ran is None or not self._accepts(ran.version):
            return None
        return self._make(msg, ran)

    async def _identify(self, execution_id: str, arrived: float) -> _Ran | None:
        """An execution no view or record has shown yet: a new one (when following, a view
        asked for after its output arrived shows it), or another version's."""
        if self._follow and self._described_at < arrived:
            await self._refresh(await self._api.describe(self._job_id))
            if (ran := self._ran.get(execution_id)) is not None:
                return ran
        if not self._complete and not self._by_time_done:
            await self._versions_by_time()
            if (ran := self._ran.get(execution_id)) is not None:
                return ran
        self._foreign.add(execution_id)
        return None

    async def _versions_by_time(self) -> None:
        """A version with more executions than a view shows (a daemon on thousands of nodes):
        the rest come from `job.executions`, each with the version it ran; from an orchestrator
        that does not say (JobVersion 0), by creation time between the versions' submissions."""
        self._by_time_done = True
        versions = sorted(await self._api.versions(self._job_id), key=lambda v: v.version)
        for e in await self._api.executions(self._job_id):
            if e.id in self._ran:
                continue
            number = 1
            for v in versions:
                if v.submitted_at <= e.created_at:
                    number = v.version
            self._remember(e, number)

    def _make(self, msg: StreamMessage, ran: _Ran | None) -> LogLine:
        _, execution_id, stream = subjects.log_parts(msg.subject) or ("", "", "")
        if ran is None:
            return LogLine(execution_id, stream, msg.data)
        return LogLine(execution_id, stream, msg.data, ran.partition, ran.node_id, ran.version)
