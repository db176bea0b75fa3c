"""Job history: every job and execution state change, appended to the SHOAL_EVENTS stream."""

from __future__ import annotations

import logging
import time

import msgspec

from shared import subjects, wire
from shared.bus import Bus
from shared.errors import ShoalError

log = logging.getLogger(__name__)


class History:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def _append(self, namespace: str, event: wire.JobEvent) -> None:
        # A plain publish: the stream stores it all the same, and no state transition waits
        # for a history acknowledgement (history is a record, not a step).
        try:
            await self._bus.publish(subjects.events(namespace, event.job_id), wire.encode(event))
        except ShoalError as exc:
            log.warning("could not record history for %s: %s", event.job_id, exc)

    async def job(
        self, record: wire.JobRecord, previous: str, message: str = "", *, view: bytes = b""
    ) -> None:
        text = message or record.state_message or f"job {record.state.lower()}"
        await self._append(
            record.namespace,
            wire.JobEvent(
                job_id=record.id,
                at=time.time(),
                kind="job",
                message=text,
                state=record.state,
                previous_state=previous,
                view=msgspec.Raw(view) if 0 < len(view) <= wire.VIEW_LIMIT else wire.NULL,
            ),
        )

    async def execution(self, record: wire.ExecutionRecord, message: str, at: float = 0.0) -> None:
        await self._append(
            record.namespace,
            wire.JobEvent(
                job_id=record.job_id,
                at=at or time.time(),
                kind="execution",
                message=message,
                state=record.compute_state,
                execution_id=record.id,
                node_id=record.node_id,
            ),
        )
