"""Shoal's JetStream assets on a cluster, and whether each has a leader: for cluster tests."""

from __future__ import annotations

import json
from typing import Any

from shared import subjects
from shared.bus import Bus
from shared.errors import ShoalError

# Every stream backing Shoal's state (the leader lease's bucket is created on first lease).
STATE = (
    subjects.EVENTS_STREAM,
    subjects.LOGS_STREAM,
    subjects.UPDATES_STREAM,
    subjects.EVALS_STREAM,
    f"KV_{subjects.JOBS_BUCKET}",
    f"KV_{subjects.JOB_VERSIONS_BUCKET}",
    f"KV_{subjects.EXECUTIONS_BUCKET}",
    f"KV_{subjects.NODES_BUCKET}",
)
LEASE = f"KV_{subjects.LEADER_BUCKET}"
CONSUMERS = (
    (subjects.EVALS_STREAM, "shoal-scheduler"),
    (subjects.UPDATES_STREAM, "shoal-updates"),
)


async def js_info(bus: Bus, api: str) -> dict[str, Any] | None:
    """A JetStream API answer, or None while the cluster cannot give one."""
    try:
        info = json.loads(await bus.request(api, b"", timeout=1))
    except ShoalError:
        return None
    return None if "error" in info else dict(info)


async def led_without(bus: Bus, dead: str, streams: tuple[str, ...] = STATE) -> bool:
    """Every stream and durable consumer has a leader other than `dead`.

    Writes that meet a stream while it elects a new leader fail, so tests wait for this.
    """
    apis = [f"$JS.API.STREAM.INFO.{s}" for s in streams]
    apis += [f"$JS.API.CONSUMER.INFO.{s}.{c}" for s, c in CONSUMERS]
    for api in apis:
        info = await js_info(bus, api)
        if info is None or info.get("cluster", {}).get("leader") in (None, dead):
            return False
    return True
