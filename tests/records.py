"""Records the state-mirror tests share: one job, and one execution of it as offered, running
and completed."""

from __future__ import annotations

import msgspec

from shared import wire

JOB = wire.JobRecord(
    id="j-1",
    name="j-1",
    namespace="default",
    type="batch",
    spec=msgspec.Raw(b"{}"),
    priority=0,
    created_at=1.0,
    updated_at=1.0,
    max_attempts=3,
)
OFFERED = wire.ExecutionRecord(
    id="e-1",
    job_id="j-1",
    namespace="default",
    node_id="node-a",
    job_version=1,
    partition=0,
    attempt=1,
    created_at=1.0,
    updated_at=1.0,
)
RUNNING = msgspec.structs.replace(OFFERED, compute_state="running")
COMPLETED = msgspec.structs.replace(
    OFFERED, compute_state="completed", desired_state="stopped", exit_code=0
)
