"""InFlight.showing_execution: a durable report is visible before its write is acked, and
taken back if the write fails (against a real nats-server)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from orchestrator.state import StateMirror
from shared.bus import Bus
from shared.errors import Conflict
from tests.conftest import eventually
from tests.records import COMPLETED, JOB, RUNNING


async def mirror_with_execution(bus: Bus) -> StateMirror:
    mirror = StateMirror(bus)
    await mirror.start()
    await mirror.create_job(JOB)  # (a mirror that starts later reads a job's executions)
    await mirror.create_execution(RUNNING)
    return mirror


async def test_shown_while_written_then_kept(bus: Bus) -> None:
    mirror = await mirror_with_execution(bus)
    try:
        created = mirror.executions["e-1"].revision
        async with mirror.in_flight.showing_execution(COMPLETED):
            assert mirror.executions["e-1"].value.compute_state == "completed"
            assert "e-1" not in mirror.by_node["node-a"]  # no longer live there
            await mirror.update_execution(COMPLETED, created)
        assert mirror.executions["e-1"].revision > created
        assert mirror.executions["e-1"].value == COMPLETED
    finally:
        await mirror.stop()


async def test_a_failed_write_takes_the_record_back(bus: Bus) -> None:
    mirror = await mirror_with_execution(bus)
    try:
        before = mirror.executions["e-1"]
        with pytest.raises(RuntimeError):
            async with mirror.in_flight.showing_execution(COMPLETED):
                raise RuntimeError("the write failed")
        assert mirror.executions["e-1"].value == RUNNING
        assert mirror.executions["e-1"].revision == before.revision
        assert "e-1" in mirror.by_node["node-a"]
    finally:
        await mirror.stop()


async def test_a_lost_cas_keeps_what_was_reread(bus: Bus) -> None:
    mirror = await mirror_with_execution(bus)
    other = await mirror_with_execution_view(bus)
    try:
        await eventually(lambda: "e-1" in other.executions)
        lost = msgspec.structs.replace(RUNNING, compute_state="lost", desired_state="stopped")
        revision = mirror.executions["e-1"].revision
        with pytest.raises(Conflict):
            async with mirror.in_flight.showing_execution(COMPLETED):
                await other.update_execution(lost)  # another writer gets there first
                await mirror.update_execution(COMPLETED, revision)
        assert mirror.executions["e-1"].value.compute_state == "lost"
    finally:
        await other.stop()
        await mirror.stop()


async def test_waiting_for_shown_executions_ends_with_the_block(bus: Bus) -> None:
    mirror = await mirror_with_execution(bus)
    try:
        in_flight = mirror.in_flight
        await asyncio.wait_for(in_flight.wait_shown_executions("j-1"), 1)  # nothing shown: at once
        inside = asyncio.Event()
        leave = asyncio.Event()

        async def writer() -> None:
            async with in_flight.showing_execution(COMPLETED):
                inside.set()
                await leave.wait()

        task = asyncio.create_task(writer())
        await inside.wait()
        waiting = asyncio.create_task(in_flight.wait_shown_executions("j-1"))
        for _ in range(10):  # let it run as far as it can: it must wait for the block
            await asyncio.sleep(0)
        assert not waiting.done()
        leave.set()
        await asyncio.wait_for(waiting, 1)
        await task
    finally:
        await mirror.stop()


async def mirror_with_execution_view(bus: Bus) -> StateMirror:
    """A second orchestrator's mirror, which sees the execution through its watch."""
    mirror = StateMirror(bus)
    await mirror.start()
    return mirror
