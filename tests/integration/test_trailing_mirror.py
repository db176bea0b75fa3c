"""A node's report reaching an orchestrator whose mirror trails KV is applied all the same
(against a real nats-server): the mirror is a watch, and a watch can fall behind, e.g. for the
seconds after the server holding it dies; a new leader may be in that state."""

from __future__ import annotations

import math

from orchestrator.history import History
from orchestrator.state import StateMirror
from orchestrator.updates import UpdateApplier
from shared import subjects, wire
from shared.bus import Bus
from tests.kv_doubles import ThroughBus, Trailing
from tests.records import JOB, RUNNING


class Applied(list[wire.ExecutionRecord]):
    """The records the applier reports changed (its ExecutionEvents)."""

    def execution_changed(self, record: wire.ExecutionRecord) -> None:
        self.append(record)


def stalled_mirror(bus: Bus) -> StateMirror:
    """A mirror whose watches of jobs and executions show nothing (caught up at once, then
    silent)."""
    silent = {
        subjects.JOBS_BUCKET: Trailing(math.inf),
        subjects.EXECUTIONS_BUCKET: Trailing(math.inf),
    }
    return StateMirror(ThroughBus(bus, silent))


async def test_a_report_on_a_record_the_watch_has_not_shown_is_applied(bus: Bus) -> None:
    writer = StateMirror(bus)  # the orchestrator that placed the execution
    trailing = stalled_mirror(bus)
    await writer.start()
    await trailing.start()
    applied = Applied()
    try:
        await writer.create_job(JOB)
        await writer.create_execution(RUNNING)
        assert "e-1" not in trailing.executions and trailing.job("j-1") is None
        applier = UpdateApplier(bus, trailing, History(bus), events=applied, cancel=_no_cancel)
        await applier.apply(
            wire.ExecutionUpdate(
                execution_id="e-1", job_id="j-1", node_id="node-a", state="completed", at=2.0
            )
        )
        assert [r.compute_state for r in applied] == ["completed"], applied
        assert trailing.job("j-1") == JOB  # read too: the evaluation this update asks for needs it
        kv = await bus.kv(subjects.EXECUTIONS_BUCKET)
        stored = await kv.get(subjects.execution_key("default", "j-1", "e-1"))
        assert stored is not None and stored.value is not None
        record = wire.decode(stored.value, wire.ExecutionRecord, what="stored record")
        assert (record.compute_state, record.desired_state) == ("completed", "stopped"), record
    finally:
        await trailing.stop()
        await writer.stop()


async def test_a_report_on_an_execution_nobody_stored_is_dropped(bus: Bus) -> None:
    mirror = StateMirror(bus)
    await mirror.start()
    applied = Applied()
    try:
        applier = UpdateApplier(bus, mirror, History(bus), events=applied, cancel=_no_cancel)
        # Ids no key can be made of (a hostile or broken node) are not ours either: dropped,
        # where a read of such a key failed and the update was retried for ever.
        for job_id, exec_id in [("j-1", "e-404"), ("", "completed"), ("j..1", "e"), ("j", "e*")]:
            await applier.apply(
                wire.ExecutionUpdate(
                    execution_id=exec_id, job_id=job_id, node_id="node-a", state="completed"
                )
            )
        assert applied == []
        assert "e-404" not in mirror.executions
    finally:
        await mirror.stop()


async def _no_cancel(node_id: str, execution_id: str, reason: str) -> None:
    raise AssertionError(f"cancelled {execution_id} on {node_id}: {reason}")
