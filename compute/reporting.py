"""Execution updates to the orchestrator: stored in JetStream once each, retried until stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from shared import subjects, trace, wire
from shared.bus import Bus
from shared.errors import ShoalError

log = logging.getLogger(__name__)


async def store_update(
    bus: Bus, node_id: str, update: wire.ExecutionUpdate, *, stopping: Callable[[], bool]
) -> None:
    """Durable, deduplicated by (execution, state); retried until NATS takes it, unless the
    node is stopping with NATS unreachable: the orchestrator then recovers the execution from
    the next hello or the disconnect timeout."""
    delay = 0.1
    msg_id = f"{update.execution_id}:{update.state}"
    trace.mark(f"agent.reporting-{update.state}", update.job_id)
    while True:
        try:
            await bus.js_publish(subjects.node_update(node_id), wire.encode(update), msg_id=msg_id)
            trace.mark(f"agent.reported-{update.state}", update.job_id)
            return
        except ShoalError as exc:
            if stopping() and not bus.connected:
                log.warning(
                    "%s: stopping with NATS unreachable; the update for %s is "
                    "left to reconciliation",
                    node_id,
                    update.execution_id,
                )
                return
            log.warning(
                "%s: update for %s not stored yet (%s); retrying",
                node_id,
                update.execution_id,
                exc,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
