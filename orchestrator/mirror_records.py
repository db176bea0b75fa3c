"""The jobs, executions and nodes an orchestrator holds in memory, and their indexes.

`StateMirror` (state.py) keeps them as KV holds them; this is the holding alone, with no I/O:
what a record shown or dropped changes in the indexes scheduling and the API read.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Generic, TypeVar

from orchestrator.settled import Trimmer, is_settled
from shared import wire
from shared.memory import shrink

R = TypeVar("R")


@dataclass(slots=True)
class Versioned(Generic[R]):
    value: R
    revision: int


CREATED = attrgetter("created_at", "id")


class MirrorRecords:
    """Records by id with the indexes kept as they change; `show_*` and `drop_*` change them
    in memory only."""

    def __init__(self) -> None:
        self.jobs: dict[str, Versioned[wire.JobRecord]] = {}
        # Settled jobs (orchestrator/settled.py), trimmed, apart from `jobs`: nothing that
        # schedules looks at them, and none of their executions is held.
        self.settled: dict[str, Versioned[wire.JobRecord]] = {}
        # Jobs that have ended but are not settled yet: what the leader's settler looks at.
        self.ended: set[str] = set()
        self._trimmer = Trimmer()
        self._dropping: dict[str, asyncio.Future[None]] = {}  # awaited by `until_dropped`
        self.executions: dict[str, Versioned[wire.ExecutionRecord]] = {}
        # A job's execution ids in creation order (a dict keeps it), so that reading them in
        # order needs no sort of a job's 100,000 executions on every evaluation and describe;
        # `_unordered`: jobs one of whose executions was seen after a newer one.
        self.by_job: dict[str, dict[str, None]] = defaultdict(dict)
        self._newest: dict[str, tuple[float, str]] = {}
        self._unordered: set[str] = set()
        self.by_node: dict[str, set[str]] = defaultdict(set)
        # Jobs a node that joins or frees room may take: every live daemon job, and the jobs
        # waiting for room (`waiting_for_room`, a subset).
        self.seeking_nodes: set[str] = set()
        self.waiting_for_room: set[str] = set()
        self.by_name: dict[tuple[str, str], str] = {}  # (namespace, name) -> job id
        # job.list's order, kept as jobs are shown: (created_at, id) of every job, ascending (a
        # new job goes at the end: no list of 100,000 moved per insert, nor on a restart that
        # replays the jobs oldest first), read from the end; a page starts at its cursor rather
        # than every job sorted per request.
        # A job dropped or re-created leaves its old entry there (`_stale` of them), skipped
        # when read and swept out once they are half the list: a purge of the oldest jobs
        # would otherwise move the whole list for each.
        self._by_created: list[tuple[float, str]] = []
        self._listed: dict[str, tuple[float, str]] = {}
        self._stale = 0
        self._replaying = False  # jobs listed as they come, sorted once (end_replay)
        self.nodes: dict[str, Versioned[wire.NodeRecord]] = {}
        self.on_node_change: Callable[[str], None] = lambda node_id: None

    def show_job(self, record: wire.JobRecord, revision: int) -> None:
        """Hold `record` as the job at `revision` (0: not stored yet), in memory only."""
        if revision and is_settled(record):
            record = self._trimmer.trim(record)
            self.jobs.pop(record.id, None)
            self.settled[record.id] = Versioned(record, revision)
            self.ended.discard(record.id)
            if record.id in self.by_job:  # (none held on a restart: no call per job)
                self.forget_executions(record.id)
        else:
            if self.settled.pop(record.id, None) is not None:  # re-run: its executions again
                self._unsettled(record)
            self.jobs[record.id] = Versioned(record, revision)
            if revision and record.state in wire.TERMINAL_JOB_STATES:
                self.ended.add(record.id)
            else:
                self.ended.discard(record.id)
        self.by_name[(record.namespace, record.name)] = record.id
        key = (record.created_at, record.id)
        listed = self._listed.get(record.id)
        if listed != key:
            self._listed[record.id] = key
            if listed is not None:
                self._unlist()
            order = self._by_created
            if self._replaying or not order or order[-1] < key:  # the newest: every submit
                order.append(key)
            else:
                at = bisect_left(order, key)
                if at < len(order) and order[at] == key:  # its own stale entry: listed again
                    self._stale -= 1
                else:
                    order.insert(at, key)
        # Jobs that may fit somewhere new when a node joins or capacity frees up: kept as
        # an index so that event costs O(jobs seeking nodes), not O(every job ever submitted). A
        # batch job waiting for room for some partitions while others run is `Running` with
        # `queued_since` set: nothing else would wake it when room frees up.
        live = record.state not in wire.TERMINAL_JOB_STATES
        if record.state == "Queued" or (record.queued_since and live):
            self.waiting_for_room.add(record.id)
        else:
            self.waiting_for_room.discard(record.id)
        if record.id in self.waiting_for_room or (record.type == "daemon" and live):
            self.seeking_nodes.add(record.id)
        else:
            self.seeking_nodes.discard(record.id)

    def drop_job(self, job_id: str) -> None:
        """Hold no record of the job, in memory only."""
        gone = self.jobs.pop(job_id, None) or self.settled.pop(job_id, None)
        if self._listed.pop(job_id, None) is not None:
            self._unlist()
        self.ended.discard(job_id)
        self.seeking_nodes.discard(job_id)
        self.waiting_for_room.discard(job_id)
        if gone is not None:
            key = (gone.value.namespace, gone.value.name)
            if self.by_name.get(key) == job_id:
                self.by_name.pop(key, None)
        waiter = self._dropping.pop(job_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def until_dropped(self, job_id: str, timeout: float) -> bool:
        """Wait until no record of the job is held (a watch applied its delete); False if it
        still is after `timeout` seconds."""
        if self.held(job_id) is None:
            return True
        waiter = self._dropping.get(job_id)
        if waiter is None:
            waiter = self._dropping[job_id] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(waiter)
        except TimeoutError:
            if self._dropping.get(job_id) is waiter:
                del self._dropping[job_id]
            return False
        return True

    def start_replay(self) -> None:
        """List jobs as they come until `end_replay()`: a restart replays the jobs in the order
        of their last writes, not of their creation, and a sorted insert of each of 100,000
        cost more than one sort of them all."""
        self._replaying = True

    def end_replay(self) -> None:
        """Sort what came since `start_replay()` (and drop its stale entries)."""
        if self._replaying:
            self._by_created = sorted(self._listed.values())
            self._stale = 0
            self._replaying = False

    def _unlist(self) -> None:
        # Swept at half stale whatever the size (amortized O(1) a drop): a stale entry holds
        # its job's id, and a few hundred such strings left over from a purge, spread over
        # the heap, kept megabytes of it from being given back.
        self._stale += 1
        if self._stale * 2 > len(self._by_created):
            listed = self._listed
            self._by_created = [k for k in self._by_created if listed.get(k[1]) == k]
            self._stale = 0

    def compact(self) -> None:
        """Rebuild the indexes at their present size: a dict or set never shrinks as its keys
        go, so after a purge the emptied tables of every job ever held stayed."""
        for node_id in [n for n, ids in self.by_node.items() if not ids]:
            del self.by_node[node_id]
        shrink(
            self.jobs,
            self.settled,
            self.ended,
            self._dropping,
            self.executions,
            self.by_job,
            self._newest,
            self._unordered,
            self.by_node,
            *self.by_node.values(),
            self.seeking_nodes,
            self.waiting_for_room,
            self.by_name,
            self._listed,
        )
        # Stale entries too: up to half the list of a purged burst's jobs, each a tuple, a float
        # and a string, would stay until the list next grew.
        listed = self._listed
        self._by_created = [k for k in self._by_created if listed.get(k[1]) == k]
        self._stale = 0

    def newest_jobs(self, before: tuple[float, str] | None = None) -> Iterator[wire.JobRecord]:
        """Every job, newest first (by its version's creation, then id, descending); with
        `before`, only those that sort below that (created_at, id). Read it without awaiting
        in between."""
        order, listed = self._by_created, self._listed
        for at in range(bisect_left(order, before) if before else len(order), 0, -1):
            key = order[at - 1]
            shown = self.jobs.get(key[1]) or self.settled.get(key[1])
            if shown is not None and listed.get(key[1]) == key:
                yield shown.value

    def forget_executions(self, job_id: str) -> None:
        """Hold none of a (purged) job's executions, in memory only."""
        for exec_id in list(self.by_job.pop(job_id, {})):
            gone = self.executions.pop(exec_id, None)
            if gone is not None:
                self.by_node[gone.value.node_id].discard(exec_id)
        self._newest.pop(job_id, None)
        self._unordered.discard(job_id)

    def _drop_execution(self, job_id: str, exec_id: str) -> None:
        gone = self.executions.pop(exec_id, None)
        ids = self.by_job.get(job_id)
        if ids is not None:
            ids.pop(exec_id, None)
            if not ids:
                del self.by_job[job_id]
                self._newest.pop(job_id, None)
                self._unordered.discard(job_id)
        if gone is not None:
            self.by_node[gone.value.node_id].discard(exec_id)

    def show_execution(self, record: wire.ExecutionRecord, revision: int) -> None:
        """Hold `record` as the execution at `revision` (0: not stored yet), in memory only."""
        self.executions[record.id] = Versioned(record, revision)
        ids = self.by_job[record.job_id]
        if record.id not in ids:
            ids[record.id] = None
            key = (record.created_at, record.id)
            newest = self._newest.get(record.job_id)
            if newest is None or key > newest:
                self._newest[record.job_id] = key
            else:
                self._unordered.add(record.job_id)
        if record.live:
            self.by_node[record.node_id].add(record.id)
        else:
            self.by_node[record.node_id].discard(record.id)

    def live_on(self, node_id: str) -> list[wire.ExecutionRecord]:
        """Executions the orchestrator believes are live on a node."""
        ids = self.by_node.get(node_id, ())
        return [self.executions[i].value for i in ids if i in self.executions]

    # ---- reads ----------------------------------------------------------------------------

    def executions_of(
        self, job_id: str, nodes: frozenset[str] | None = None
    ) -> list[wire.ExecutionRecord]:
        """The job's executions, oldest first; with `nodes`, only those placed on them."""
        ids = self.by_job.get(job_id, {})
        out = [self.executions[i].value for i in ids if i in self.executions]
        if job_id in self._unordered:
            out.sort(key=CREATED)
            self.by_job[job_id] = {e.id: None for e in out} | ids
            self._unordered.discard(job_id)
        if nodes is not None:
            out = [e for e in out if e.node_id in nodes]
        return out

    def job(self, job_id: str) -> wire.JobRecord | None:
        """The job's record if it is not settled (what scheduling looks at)."""
        v = self.jobs.get(job_id)
        return v.value if v else None

    def held(self, job_id: str) -> Versioned[wire.JobRecord] | None:
        """The job as held: its record, or a settled job's trimmed record."""
        return self.jobs.get(job_id) or self.settled.get(job_id)

    def _unsettled(self, record: wire.JobRecord) -> None:
        """A settled job shown unsettled again (a new version): its executions are not held."""
