"""Applies compute-side execution updates from the durable SHOAL_UPDATES stream to KV.

An update is acked only once applied (or found to be stale), so a killed orchestrator loses
none. A final report whose archive is in the node's bucket is applied once the archive has been
copied to the namespace's bucket (`results_handoff.py`); it is redelivered until then.
Applying is idempotent: states only move forward, and a terminal record never changes.
What an applied update makes the orchestrator evaluate is `ExecutionEvents`' business
(`evaluation_rules.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec

from orchestrator import metrics
from orchestrator.history import History
from orchestrator.results_handoff import QUICK, CopyPending, ResultsHandoff
from orchestrator.state import StateMirror
from shared import subjects, trace, wire
from shared.bus import Bus, StreamMessage
from shared.cas import retry_cas
from shared.errors import Conflict, ShoalError

log = logging.getLogger(__name__)

_ORDER = {"offered": 0, "accepted": 1, "running": 2}


class ExecutionEvents(Protocol):
    """What the applier tells the orchestrator (`EvaluationRules`)."""

    def execution_changed(self, record: wire.ExecutionRecord) -> None:
        """`record` was applied, or, for a final report, is shown while its write is in
        flight."""
        ...


class UpdateApplier:
    def __init__(
        self,
        bus: Bus,
        mirror: StateMirror,
        history: History,
        *,
        events: ExecutionEvents,
        cancel: Callable[[str, str, str], Awaitable[None]],
    ) -> None:
        self._bus = bus
        self._mirror = mirror
        self._history = history
        self._events = events
        self._cancel = cancel
        self._results = ResultsHandoff(bus)

    def compact(self) -> None:
        self._results.compact()

    async def run(self) -> None:
        # A short ack wait: messages handed to a leader that just died come back in seconds
        # (applying twice is harmless: updates only move states forward).
        try:
            await self._bus.consume(
                subjects.UPDATES_STREAM,
                "shoal-updates",
                subjects.UPDATES_SUBJECTS,
                self._apply_batch,
                batch=512,
                ack_wait=5.0,
            )
        finally:
            await self._results.close()

    async def _apply_batch(self, batch: list[StreamMessage]) -> None:
        # Updates of one execution apply in order; different executions at once.
        lanes: dict[str, list[StreamMessage]] = {}
        for msg in batch:
            lanes.setdefault(_lane(msg), []).append(msg)
        if len(lanes) == 1:  # one at a time (the latency path): no task to wrap it in
            await self._handle_all(batch)
            return
        await asyncio.gather(*(self._handle_all(msgs) for msgs in lanes.values()))

    async def _handle_all(self, msgs: list[StreamMessage]) -> None:
        for msg in msgs:
            await self._handle(msg)

    async def _handle(self, msg: StreamMessage) -> None:
        try:
            update = wire.decode(msg.data, wire.ExecutionUpdate, what=msg.subject)
            if update.node_id != subjects.node_of(msg.subject):
                raise Conflict(f"update on {msg.subject} claims node {update.node_id!r}")
        except ShoalError as exc:
            log.warning("dropping bad execution update: %s", exc)
            await msg.term()
            return
        try:
            await retry_cas(lambda: self.apply(update), what=f"execution {update.execution_id}")
        except Conflict:
            await msg.nak(delay=0.5)  # kept losing the CAS: try again shortly, never drop it
            return
        except CopyPending:
            await msg.nak(delay=QUICK)  # its results are still being copied: apply it later
            return
        except ShoalError as exc:
            log.warning("applying update for %s: %s; will retry", update.execution_id, exc)
            await msg.nak(delay=1.0)
            return
        metrics.UPDATES_APPLIED.labels(state=update.state).inc()
        await msg.ack()

    async def apply(self, update: wire.ExecutionUpdate) -> None:
        trace.mark(f"updates.applying-{update.state}", update.job_id)
        in_flight = self._mirror.in_flight
        if in_flight.is_creating_execution(update.execution_id):
            # The node took the offer and reported before the record's write was acked (the
            # watch may have shown the record already: wait for the create all the same).
            await in_flight.wait_execution_create(update.execution_id)
        await in_flight.wait_job_create(update.job_id)  # the job's first history line goes first
        known = self._mirror.executions.get(update.execution_id)
        if known is None:  # the watch may trail KV: dropping this would lose the update
            known = await self._mirror.refresh_execution(update.job_id, update.execution_id)
            if known is not None and self._mirror.job(update.job_id) is None:
                # ...and the job too, or the evaluation this update triggers finds no job
                await self._mirror.fetch_job(known.value.namespace, update.job_id)
        if known is None or known.value.node_id != update.node_id:
            return  # not ours (or forged): nothing to apply
        record = known.value
        if not record.live:
            if update.state in ("accepted", "running"):
                # Stopped or replaced here while the node still runs it: make it stop.
                await self._cancel(
                    update.node_id, record.id, f"execution is {record.compute_state}"
                )
            elif update.state in wire.TERMINAL_COMPUTE_STATES:
                self._results.discard(record, update)  # results nobody will copy
            return
        if update.state in _ORDER and _ORDER[update.state] <= _ORDER[record.compute_state]:
            return
        if update.state in wire.TERMINAL_COMPUTE_STATES:
            # Results count only once copied from the node's bucket into the namespace's:
            # CopyPending (the report comes back) while a large archive is copied.
            update = await self._results.settle(record, update)
        changed = msgspec.structs.replace(
            record,
            compute_state=update.state,
            exit_code=update.exit_code,
            error=update.error,
            retryable=update.retryable,
            result=update.result,
            updated_at=update.at or time.time(),
        )
        if update.state not in wire.TERMINAL_COMPUTE_STATES:
            await self._write(changed, update, known.revision, record)
            self._events.execution_changed(changed)
            return
        changed = msgspec.structs.replace(changed, desired_state="stopped")
        # The report is durable (this message is acked only once applied), so the job is
        # evaluated on it while the write is in flight: its end costs one sequential write, not
        # two. The job's closing event waits for this block (the history stays in order).
        async with in_flight.showing_execution(changed):
            self._events.execution_changed(changed)
            await self._write(changed, update, known.revision, record)

    async def _write(
        self,
        changed: wire.ExecutionRecord,
        update: wire.ExecutionUpdate,
        revision: int,
        was: wire.ExecutionRecord,
    ) -> None:
        await self._mirror.update_execution(changed, revision)
        if update.started_at and was.compute_state != "running":
            # It ran and ended within the node's hold-back: one write, both lines of history.
            ran = msgspec.structs.replace(changed, compute_state="running")
            await self._history.execution(ran, f"running on {update.node_id}", update.started_at)
        await self._history.execution(changed, _describe(update))


def _lane(msg: StreamMessage) -> str:
    """The execution an update is about, cheaply (the message is decoded properly later)."""
    try:
        return str(msgspec.json.decode(msg.data, type=_Key).execution_id)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        return ""  # invalid UTF-8 in a string raises UnicodeDecodeError, not DecodeError


class _Key(msgspec.Struct, rename={"execution_id": "ExecutionID"}):
    execution_id: str = ""


def _describe(update: wire.ExecutionUpdate) -> str:
    if update.state == "completed":
        return f"completed on {update.node_id} (exit code {update.exit_code})"
    if update.state == "failed":
        why = update.error or f"exit code {update.exit_code}"
        return f"failed on {update.node_id}: {why}"
    return f"{update.state} on {update.node_id}"
