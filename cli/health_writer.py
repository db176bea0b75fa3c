"""Keeps the health file of `shoal orchestrator|compute --health-file` fresh (cli/health.py
reads it): a child task of the command's main coroutine, stopped and the file removed on exit."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import click

from cli import health
from compute.agent import ComputeAgent
from orchestrator.service import Orchestrator
from shared.bus import Bus
from shared.lifecycle import Supervisor

log = logging.getLogger(__name__)

health_file_option = click.option(
    "--health-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="SHOAL_HEALTH_FILE",
    help="Rewrite this JSON status file every few seconds, for `shoal health PATH` probes.",
)


def orchestrator_health(orch: Orchestrator, bus: Bus) -> health.Health:
    connected = bus.connected
    return health.Health(
        role="orchestrator",
        name=orch.name,
        pid=os.getpid(),
        time=time.time(),
        ok=connected,
        nats_connected=connected,
        leading=orch.leading,
        nodes=len(orch.mirror.nodes),
        jobs=len(orch.mirror.jobs),
    )


def compute_health(name: str, agents: Sequence[ComputeAgent], bus: Bus) -> health.Health:
    """One agent, or a --virtual fleet summed up."""
    connected = bus.connected
    ids = [a.node_id for a in agents]
    approvals = sorted({a.approval for a in agents})
    return health.Health(
        role="compute",
        name=name,
        pid=os.getpid(),
        time=time.time(),
        ok=connected,
        nats_connected=connected,
        node_id=ids[0] if len(ids) == 1 else f"{ids[0]}..{ids[-1]}",
        # The agent has no public view of these yet; read-only use of its own bookkeeping.
        registered=all(a.registered for a in agents),
        approval=",".join(approvals),
        running=sum(a.running_count for a in agents),
    )


async def _write_health(path: Path, snapshot: Callable[[], health.Health]) -> None:
    """Forever: rewrite the file. A failed write is logged, never fatal: the file going
    stale is what tells the probe."""
    down_since: float | None = None
    while True:
        record = snapshot()
        if record.nats_connected:
            down_since = None
        else:
            down_since = down_since or record.time
            record = dataclasses.replace(
                record, reason="NATS disconnected", disconnected_since=down_since
            )
        try:
            health.write(path, record)
        except OSError as exc:
            log.warning("cannot write the health file %s: %s", path, exc)
        await asyncio.sleep(health.WRITE_EVERY)


@contextlib.asynccontextmanager
async def keep_fresh(
    path: Path | None, snapshot: Callable[[], health.Health]
) -> AsyncIterator[None]:
    """Keep `path` fresh while the body runs; remove it after, so a stopped process never
    passes a probe."""
    if path is None:
        yield
        return
    with contextlib.suppress(OSError):  # a write failure says it better, below
        path.parent.mkdir(parents=True, exist_ok=True)
    children = Supervisor("health-file")
    await children.start()
    children.spawn(_write_health(path, snapshot), name="health-file")
    try:
        yield
    finally:
        await children.stop()
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
