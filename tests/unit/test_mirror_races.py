"""StateMirror orderings that a real server produces only now and then, made certain with a
KV stand-in whose acknowledgements the test releases."""

from __future__ import annotations

import asyncio

import msgspec

from orchestrator.state import StateMirror
from shared import subjects, wire
from shared.bus import Entry
from tests.records import COMPLETED, OFFERED


class HeldKV:
    """create() returns revision 7 once `ack` is set."""

    bucket = "shoal-executions"

    def __init__(self) -> None:
        self.ack = asyncio.Event()

    async def create(self, key: str, value: bytes) -> int:
        await self.ack.wait()
        return 7


async def test_a_late_create_ack_does_not_undo_a_report_shown_meanwhile() -> None:
    """The watch's echo of the create can arrive before the create's own ack; a node's report
    shown after that echo must survive the ack (it once went back to `offered`, and the job's
    evaluation, reading it then, left the job Pending for good)."""
    mirror = StateMirror(None)  # type: ignore[arg-type]
    kv = HeldKV()
    mirror._execs_kv = kv  # type: ignore[assignment]
    creating = asyncio.create_task(mirror.create_execution(OFFERED))
    await asyncio.sleep(0)
    assert mirror.creating("e-1")
    echo = Entry(subjects.execution_key("j-1", "e-1"), wire.encode(OFFERED), 7)
    mirror._apply_execution(echo)
    async with mirror.showing(COMPLETED):
        kv.ack.set()
        await creating
        assert mirror.executions["e-1"].value.compute_state == "completed"


async def test_a_create_ack_still_lands_when_nothing_came_first() -> None:
    mirror = StateMirror(None)  # type: ignore[arg-type]
    kv = HeldKV()
    mirror._execs_kv = kv  # type: ignore[assignment]
    kv.ack.set()
    await mirror.create_execution(OFFERED)
    assert mirror.executions["e-1"].revision == 7
    assert not mirror.creating("e-1")


def test_a_running_job_that_waits_for_room_is_woken_when_room_frees_up() -> None:
    # Some partitions run, the others wait for a node (Running, with queued_since): the
    # index of waiting jobs is what the orchestrator re-triggers when capacity frees up.
    mirror = StateMirror(None)  # type: ignore[arg-type]
    job = wire.JobRecord(
        id="j-1", name="j", namespace="default", type="batch", spec=wire.NULL, state="Running"
    )
    mirror._set_job(job, 1)
    assert "j-1" not in mirror.waiting
    mirror._set_job(msgspec.structs.replace(job, queued_since=100.0), 2)
    assert "j-1" in mirror.waiting
    mirror._set_job(msgspec.structs.replace(job, queued_since=100.0, state="Completed"), 3)
    assert "j-1" not in mirror.waiting
