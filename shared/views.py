"""How a job is shown to users, built from its stored records: by the API from its mirror, and
by a client from the records the server republishes on `shoal.v1.state.<job-id>.>`."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec

from shared import wire
from shared.bus import Message
from shared.errors import InvalidSpec

# The header the server copies from the KV write it republishes: a delete or purge of the key.
_KV_OPERATION = "KV-Operation"


class _Count(msgspec.Struct):
    Count: Any = None


_decode_count = msgspec.json.Decoder(_Count).decode


def execution_view(e: wire.ExecutionRecord) -> wire.ExecutionView:
    return wire.ExecutionView(
        id=e.id,
        node_id=e.node_id,
        partition=e.partition,
        attempt=e.attempt,
        desired_state=e.desired_state,
        compute_state=e.compute_state,
        exit_code=e.exit_code,
        error=e.error,
        result=e.result,
        created_at=e.created_at,
        updated_at=e.updated_at,
        job_version=e.job_version,
    )


VIEW_EXECUTIONS = 1000
# In C, not a lambda: a describe of a job of 100,000 executions sorts them all.
_CREATED = attrgetter("created_at", "id")


def job_view(
    job: wire.JobRecord,
    executions: list[wire.ExecutionRecord],
    *,
    with_spec: bool = False,
) -> wire.JobView:
    """The job with those of `executions` that ran its current version, oldest first: the
    newest VIEW_EXECUTIONS of them, and how many there are by state."""
    current = sorted((e for e in executions if e.job_version == job.version), key=_CREATED)
    shown = [execution_view(e) for e in current[-VIEW_EXECUTIONS:]]
    return _view(job, current_counts(job, current), shown, job.spec if with_spec else wire.NULL)


def listed_view(job: wire.JobRecord, executions: list[wire.ExecutionRecord]) -> wire.JobView:
    """What job.list shows of a job: its current version's executions counted, none listed
    (a settled job's counts are in its record; describe and job.executions list them)."""
    if job.settled is not None:
        return _view(job, dict(job.settled), [], wire.NULL)
    return _view(job, current_counts(job, executions), [], wire.NULL)


def current_counts(job: wire.JobRecord, executions: list[wire.ExecutionRecord]) -> dict[str, int]:
    """The job's current version's executions by compute state (what a view counts, and what
    settling writes into the record)."""
    counts: dict[str, int] = {}
    for e in executions:
        if e.job_version == job.version:
            counts[e.compute_state] = counts.get(e.compute_state, 0) + 1
    return counts


def spec_count(spec: msgspec.Raw) -> int | None:
    """The spec's Count, read without decoding the rest of it (a view is built per job)."""
    try:
        count = _decode_count(spec).Count
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def _view(
    job: wire.JobRecord,
    counts: dict[str, int],
    executions: list[wire.ExecutionView],
    spec: msgspec.Raw,
) -> wire.JobView:
    return wire.JobView(
        id=job.id,
        name=job.name,
        namespace=job.namespace,
        type=job.type,
        state=job.state,
        state_message=job.state_message,
        version=job.version,
        priority=job.priority,
        count=spec_count(job.spec),
        created_at=job.created_at,
        updated_at=job.updated_at,
        executions=executions,
        spec=spec,
        execution_counts=counts,
    )


class StoredJob:
    """One job's records as the server stored them, fed from its state subjects.

    The job's record and its executions' records live in two streams, so their copies can
    arrive in either order: an ended job is only shown once no execution of its version
    still looks live (until then `ended()` is None and the caller waits or asks the API).
    """

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.job: wire.JobRecord | None = None
        self.executions: dict[str, wire.ExecutionRecord] = {}
        # Live executions by job version, kept as records arrive: whether the job's end can
        # be shown is asked after every burst of them, and a scan of 100,000 each time was
        # more than the records' own pace.
        self._live: dict[int, int] = {}

    def add(self, msg: Message) -> None:
        """Take one republished record; anything else on the subject (a record of another
        job or execution than its subject names, or one that does not decode) is ignored."""
        # shoal.v1.ns.<namespace>.state.<job-id>.job | .execution.<execution-id>
        tokens = msg.subject.split(".")[5:]
        if len(tokens) < 2 or tokens[0] != self.job_id:
            return
        deleted = (msg.headers or {}).get(_KV_OPERATION) in ("DEL", "PURGE")
        try:
            if tokens[1] == "job" and len(tokens) == 2 and not deleted:
                job = wire.decode(msg.data, wire.JobRecord, what="job record")
                if job.id == self.job_id:
                    self.job = job
            elif tokens[1] == "execution" and len(tokens) == 3:
                if deleted:
                    self._count(self.executions.pop(tokens[2], None), -1)
                    return
                record = wire.decode(msg.data, wire.ExecutionRecord, what="execution")
                if record.job_id == self.job_id and record.id == tokens[2]:
                    self._count(self.executions.get(record.id), -1)
                    self.executions[record.id] = record
                    self._count(record, 1)
        except InvalidSpec:
            return  # not a record this client can read: the API's view will do

    @property
    def job_ended(self) -> bool:
        """Whether the job's stored record says it ended (its executions may not yet)."""
        return self.job is not None and self.job.state in wire.TERMINAL_JOB_STATES

    def ended(self) -> wire.JobView | None:
        """The job as `job.describe` shows it, once its stored record says it ended and its
        executions' records have caught up with that."""
        job = self.job
        if job is None or not self.job_ended:
            return None
        if self._live.get(job.version, 0):
            return None
        return self.view()

    def view(self) -> wire.JobView:
        """The job as `job.describe` shows it, from its records alone (after `job` is set)."""
        assert self.job is not None
        return job_view(self.job, list(self.executions.values()), with_spec=True)

    def _count(self, record: wire.ExecutionRecord | None, sign: int) -> None:
        if record is not None and record.live:
            self._live[record.job_version] = self._live.get(record.job_version, 0) + sign


def execution_counts(view: wire.JobView) -> dict[str, int]:
    """Executions by state: all of them, or those shown (an orchestrator before
    ExecutionCounts)."""
    if view.execution_counts:
        return view.execution_counts
    counts: dict[str, int] = {}
    for e in view.executions:
        counts[e.compute_state] = counts.get(e.compute_state, 0) + 1
    return counts


def shown_state(view: wire.JobView) -> str:
    """The job's state as a person reads it, derived and never stored: an unfinished service
    with its current version's replicas running out of Count (`Running 0/2`), an unfinished
    daemon with the nodes it runs on (`Running on 3 nodes`); any other job its bare state."""
    if view.terminal or view.type not in ("service", "daemon"):
        return view.state
    running = execution_counts(view).get("running", 0)
    if view.type == "service":
        return f"{view.state} {running}/{view.count or 1}"
    return f"{view.state} on {running} node{'' if running == 1 else 's'}"


def state_line(view: wire.JobView) -> str:
    """`shown_state` and the job's message: `Running 0/2: waiting for nodes: …`."""
    shown = shown_state(view)
    return f"{shown}: {view.state_message}" if view.state_message else shown
