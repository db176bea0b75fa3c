"""Answers that fit a NATS message: job views that show fewer executions when too large, and
job.list's pages (newest first, resumed from the cursor its `Next` gave)."""

from __future__ import annotations

import msgspec

from shared import wire
from shared.errors import InvalidSpec


def job_cursor(after: str) -> tuple[float, str]:
    """job.list's `After`: the `Next` of the page before (`<created at>/<job id>`), as the
    (created_at, id) the next page's jobs sort below."""
    created, _, job_id = after.partition("/")
    try:
        return (float(created), job_id)
    except ValueError:
        raise InvalidSpec(
            f"After {after!r} is not a job.list cursor: pass the Next of the page before"
        ) from None


def fitting(result: object, limit: int) -> bytes:
    """`result` encoded; job views that would not fit in a NATS message (a list of daemons on
    large fleets, long errors on many executions) show fewer executions: the newest 100, then
    none (ExecutionCounts still counts them all). A stop that was done must not be answered
    with an error."""
    encoded = wire.encode(result)
    if len(encoded) <= limit - 1024 or not isinstance(result, wire.JobView | wire.JobList):
        return encoded
    for keep in (100, 0):
        encoded = wire.encode(showing(result, keep))
        if len(encoded) <= limit - 1024:
            break
    return encoded


def showing(result: wire.JobView | wire.JobList, keep: int) -> wire.JobView | wire.JobList:
    if isinstance(result, wire.JobList):
        jobs = [showing(j, keep) for j in result.jobs]
        return wire.JobList(jobs=jobs, next=result.next)  # type: ignore[arg-type]
    return msgspec.structs.replace(result, executions=result.executions[-keep:] if keep else [])
