"""Leader election: one scheduling orchestrator at a time, by a lease in a KV bucket with a TTL.

The holder creates the lease key and keeps rewriting it (each write is a new message, so the
bucket's max-age restarts); if it dies, the key ages out and the next create succeeds. Losing a
renewal (a CAS conflict or NATS trouble past the TTL) means stepping down at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from orchestrator import metrics
from shared import subjects
from shared.bus import KV, Bus
from shared.errors import Conflict, ShoalError

log = logging.getLogger(__name__)

LEASE_KEY = "scheduler"


class Lease:
    def __init__(self, bus: Bus, holder: str, *, ttl: float = 5.0) -> None:
        self._bus = bus
        self.holder = holder
        self.ttl = ttl
        self._kv: KV | None = None
        self._revision = 0
        self.leading = False

    async def _bucket(self) -> KV:
        if self._kv is None:
            self._kv = await self._bus.kv(subjects.LEADER_BUCKET, ttl=self.ttl)
        return self._kv

    async def try_acquire(self) -> bool:
        kv = await self._bucket()
        try:
            self._revision = await kv.create(LEASE_KEY, self.holder.encode())
        except Conflict:
            return False
        self.leading = True
        return True

    async def renew(self) -> bool:
        kv = await self._bucket()
        try:
            self._revision = await kv.update(LEASE_KEY, self.holder.encode(), self._revision)
        except Conflict:  # someone else holds it now
            self.leading = False
            return False
        except ShoalError:  # NATS trouble: keep trying until the lease would have expired
            return False
        return True

    async def release(self) -> None:
        if self.leading and self._kv is not None:
            self.leading = False
            with contextlib.suppress(ShoalError):  # it ages out anyway
                await self._kv.delete(LEASE_KEY)

    async def run(
        self,
        lead: Callable[[], Awaitable[None]],
        follow: Callable[[], Awaitable[None]],
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        """Forever: acquire, call `lead()`, renew; on loss call `follow()` and try again.

        A leader whose scheduling is no longer `healthy()` (a part of it crashed) hands the
        lease back at once rather than holding it while nothing is scheduled."""
        interval = self.ttl / 3
        while True:
            try:
                acquired = await self.try_acquire()
            except ShoalError as exc:
                log.warning("leader election: %s", exc)
                acquired = False
            if not acquired:
                await asyncio.sleep(interval)
                continue
            log.info("%s is now the scheduling leader", self.holder)
            metrics.LEASE_CHANGES.inc()
            await lead()
            last_ok = time.monotonic()
            while True:
                await asyncio.sleep(interval)
                if not healthy():
                    log.error("%s: scheduling failed; handing the lease back", self.holder)
                    await self.release()
                    break
                if await self.renew():
                    last_ok = time.monotonic()
                    continue
                if time.monotonic() - last_ok > self.ttl * 0.8 or not self.leading:
                    log.warning("%s lost the scheduling lease; stepping down", self.holder)
                    break
            self.leading = False
            metrics.LEASE_CHANGES.inc()
            await follow()
