"""StateMirror orderings that a real server produces only now and then, made certain with an
in-memory bucket whose acknowledgements the test releases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from orchestrator.state import StateMirror
from shared import subjects, wire
from tests.conftest import eventually
from tests.kv_doubles import MemoryBuckets, MemoryKV
from tests.records import COMPLETED, OFFERED


@pytest.fixture
async def executions() -> MemoryKV:
    return MemoryKV(subjects.EXECUTIONS_BUCKET)


@pytest.fixture
async def mirror(executions: MemoryKV) -> AsyncIterator[StateMirror]:
    mirror = StateMirror(MemoryBuckets(executions))
    await mirror.start()
    try:
        yield mirror
    finally:
        await mirror.stop()


async def test_a_late_create_ack_does_not_undo_a_report_shown_meanwhile(
    mirror: StateMirror, executions: MemoryKV
) -> None:
    """The watch's echo of the create can arrive before the create's own ack; a node's report
    shown after that echo must survive the ack (it once went back to `offered`, and the job's
    evaluation, reading it then, left the job Pending for good)."""
    executions.acks = asyncio.Event()
    creating = asyncio.create_task(mirror.create_execution(OFFERED))
    await eventually(lambda: "e-1" in mirror.executions, interval=0.001, what="the echo")
    assert mirror.in_flight.is_creating_execution("e-1")
    async with mirror.in_flight.showing_execution(COMPLETED):
        executions.acks.set()
        await creating
        assert mirror.executions["e-1"].value.compute_state == "completed"


async def test_a_create_ack_still_lands_when_nothing_came_first(
    mirror: StateMirror, executions: MemoryKV
) -> None:
    await mirror.create_execution(OFFERED)
    stored = await executions.get(subjects.execution_key("default", "j-1", "e-1"))
    assert stored is not None
    assert mirror.executions["e-1"].revision == stored.revision
    assert not mirror.in_flight.is_creating_execution("e-1")


async def test_a_running_job_that_waits_for_room_is_woken_when_room_frees_up(
    mirror: StateMirror,
) -> None:
    # Some partitions run, the others wait for a node (Running, with queued_since): the
    # index of jobs seeking nodes is what the orchestrator re-triggers when capacity frees up.
    job = wire.JobRecord(
        id="j-1", name="j", namespace="default", type="batch", spec=wire.NULL, state="Running"
    )
    await mirror.create_job(job)
    assert "j-1" not in mirror.seeking_nodes
    await mirror.update_job(msgspec.structs.replace(job, queued_since=100.0))
    assert "j-1" in mirror.seeking_nodes
    await mirror.update_job(msgspec.structs.replace(job, queued_since=100.0, state="Completed"))
    assert "j-1" not in mirror.seeking_nodes
