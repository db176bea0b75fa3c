"""Streams a task's stdout/stderr files into SHOAL_LOGS while it runs, capped per execution."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from shared import subjects
from shared.bus import Bus
from shared.errors import ShoalError

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
TRUNCATED = b"\n[shoal: output truncated: this execution wrote more than %d bytes to %s]\n"


class LogShipper:
    """Tails one output file; `finish()` ships the rest and returns."""

    def __init__(
        self,
        bus: Bus,
        path: Path,
        job_id: str,
        execution_id: str,
        stream: str,
        *,
        namespace: str = "default",
        node_id: str = "_",
        limit: int = 8 * 1024 * 1024,
        interval: float = 0.1,
        idle_interval: float = 1.0,
    ) -> None:
        """`namespace` is the job's, `node_id` this node's: a node's identity may publish
        only log subjects that name it."""
        self._bus = bus
        self._path = path
        self._subject = subjects.logs(namespace, job_id, node_id, execution_id, stream)
        self._stream = stream
        self._limit = limit
        self._interval = interval
        self._idle_interval = max(idle_interval, interval)
        self._offset = 0
        self._stopped = asyncio.Event()
        self._truncated = False

    @property
    def interval(self) -> float:
        return self._interval

    async def follow(self) -> None:
        """Ship now, then every `interval` until `stop()` (started one interval into the task:
        a shorter task's output is shipped once, at its end). Stopped by a flag, not by
        cancellation: nats-py can swallow a cancel that lands while a publish completes, and
        a tail that never ends would hold the execution open.

        A quiet file is looked at less and less often, down to every `idle_interval`, and
        again every `interval` once it grows: a node running many long, quiet tasks (daemons,
        services) spent its CPU looking at their files 20 times a second each."""
        interval = self._interval
        while not self._stopped.is_set():
            grew = await self.ship()
            interval = self._interval if grew else min(interval * 2, self._idle_interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()

    async def ship(self) -> bool:
        """Publish whatever was written since the last call; whether there was any."""
        if self._truncated or not self._path.exists():
            return False
        grew = False
        with self._path.open("rb") as f:
            f.seek(self._offset)
            while True:
                room = self._limit - self._offset
                data = f.read(min(CHUNK, max(room, 0)) if room > 0 else 1)
                if not data:
                    return grew
                if room <= 0:
                    await self._publish(TRUNCATED % (self._limit, self._stream.encode()))
                    self._truncated = True
                    return True
                self._offset += len(data)
                grew = True
                await self._publish(data)

    async def _publish(self, data: bytes) -> None:
        try:
            await self._bus.js_publish(self._subject, data)
        except ShoalError as exc:  # logs are best effort; the task itself must not fail
            log.warning("could not ship logs to %s: %s", self._subject, exc)
