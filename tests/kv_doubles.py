"""KV buckets for tests, handed to the state mirror through its `Buckets` Protocol: one in
memory, and stand-ins in front of real buckets that hold back a create or a watch."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from orchestrator.buckets import KV
from shared.bus import Bus, Entry
from shared.errors import Conflict


class MemoryKV:
    """A bucket in memory with JetStream's CAS (one revision counter per bucket) and a watch.
    While `acks` is an unset event, a write is stored (and watched) at once, but answered only
    once the event is set: an acknowledgement that comes after the watch's echo. `batched`:
    `latest` answers (as a bucket of one replica on a server from 2.11 does), and counts its
    calls in `batches`; otherwise it says None, as a bucket not read that way does."""

    def __init__(self, bucket: str, *, batched: bool = False) -> None:
        self.bucket = bucket
        self.batched = batched
        self.batches = 0
        self.acks: asyncio.Event | None = None
        self._entries: dict[str, Entry] = {}
        self._revision = 0
        self._watchers: list[asyncio.Queue[Entry | None]] = []

    async def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        return entry if entry is not None and entry.value is not None else None

    async def create(self, key: str, value: bytes) -> int:
        known = self._entries.get(key)
        if known is not None and known.value is not None:
            raise Conflict(f"{self.bucket}/{key} already exists")
        return await self._store(key, value)

    async def update(self, key: str, value: bytes, revision: int) -> int:
        if revision <= 0:
            return await self.create(key, value)
        known = self._entries.get(key)
        if known is None or known.revision != revision:
            raise Conflict(f"{self.bucket}/{key} is not at revision {revision}")
        return await self._store(key, value)

    async def delete(self, key: str, revision: int | None = None) -> None:
        known = self._entries.get(key)
        if revision is not None and (known is None or known.revision != revision):
            raise Conflict(f"{self.bucket}/{key} is not at revision {revision}")
        await self._store(key, None)

    async def last_revision(self) -> int:
        return self._revision

    async def entries(self) -> int:
        return len(self._entries)  # one kept a key, delete markers too

    async def latest(self, patterns: Sequence[str]) -> list[Entry] | None:
        if not self.batched:
            return None
        self.batches += 1
        return [e for e in self._entries.values() if any(_matches(p, e.key) for p in patterns)]

    async def follow(
        self, pattern: str, apply: Callable[[Entry | None], None], *, since: int = 0
    ) -> None:
        async for entry in self.watch(pattern, since=since):
            apply(entry)

    async def watch(self, pattern: str = ">", *, since: int = 0) -> AsyncIterator[Entry | None]:
        # Every key (`pattern` is not matched: the mirror applies only what is its own). With
        # `since`, only what the history it keeps (one entry a key) has from that revision on.
        queue: asyncio.Queue[Entry | None] = asyncio.Queue()
        for entry in sorted(self._entries.values(), key=lambda e: e.revision):
            if entry.revision >= since:
                queue.put_nowait(entry)
        queue.put_nowait(None)
        self._watchers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._watchers.remove(queue)

    async def _store(self, key: str, value: bytes | None) -> int:
        self._revision += 1
        entry = self._entries[key] = Entry(key, value, self._revision)
        for queue in self._watchers:
            queue.put_nowait(entry)
        if self.acks is not None:
            await self.acks.wait()
        return entry.revision


def _matches(pattern: str, key: str) -> bool:
    """NATS subject matching: `*` one token, `>` the rest."""
    wanted, tokens = pattern.split("."), key.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or token not in ("*", tokens[i]):
            return False
    return len(tokens) == len(wanted)


class MemoryBuckets:
    """Opens MemoryKVs: the ones given, and a new empty one for any other name."""

    def __init__(self, *buckets: MemoryKV) -> None:
        self.buckets = {kv.bucket: kv for kv in buckets}

    async def kv(self, bucket: str, *, republish: tuple[str, str] | None = None) -> MemoryKV:
        return self.buckets.setdefault(bucket, MemoryKV(bucket))


class StandIn:
    """In front of a real bucket, which it is given when the mirror opens it (`ThroughBus`);
    passes everything on, unless a subclass says otherwise."""

    bucket = ""
    inner: KV

    async def get(self, key: str) -> Entry | None:
        return await self.inner.get(key)

    async def create(self, key: str, value: bytes) -> int:
        return await self.inner.create(key, value)

    async def update(self, key: str, value: bytes, revision: int) -> int:
        return await self.inner.update(key, value, revision)

    async def delete(self, key: str, revision: int | None = None) -> None:
        await self.inner.delete(key, revision)

    def watch(self, pattern: str = ">", *, since: int = 0) -> AsyncIterator[Entry | None]:
        return self.inner.watch(pattern, since=since)

    async def last_revision(self) -> int:
        return await self.inner.last_revision()

    async def entries(self) -> int:
        return await self.inner.entries()

    async def latest(self, patterns: Sequence[str]) -> list[Entry] | None:
        return await self.inner.latest(patterns)

    async def follow(
        self, pattern: str, apply: Callable[[Entry | None], None], *, since: int = 0
    ) -> None:
        async for entry in self.watch(pattern, since=since):  # as a subclass's watch shows it
            apply(entry)


class ThroughBus:
    """The bus's buckets, with a stand-in in front of each bucket named in `stand_ins`."""

    def __init__(self, bus: Bus, stand_ins: dict[str, StandIn]) -> None:
        self._bus = bus
        self._stand_ins = stand_ins

    async def kv(self, bucket: str, *, republish: tuple[str, str] | None = None) -> KV:
        real = await self._bus.kv(bucket, republish=republish)
        stand_in = self._stand_ins.get(bucket)
        if stand_in is None:
            return real
        stand_in.inner, stand_in.bucket = real, bucket
        return stand_in


class HookedCreates(StandIn):
    """Creates go through `hook` while it is set (`real_create` is the bucket's own)."""

    def __init__(self) -> None:
        self.hook: Callable[[str, bytes], Awaitable[int]] | None = None

    async def create(self, key: str, value: bytes) -> int:
        if self.hook is None:
            return await self.inner.create(key, value)
        return await self.hook(key, value)

    async def real_create(self, key: str, value: bytes) -> int:
        return await self.inner.create(key, value)


class Trailing(StandIn):
    """A watch of the whole bucket (the mirror's) that shows each change `lag` seconds late
    (math.inf: never), and says it has caught up at once: a watch fallen behind, as for the
    seconds after its server died. A watch of some keys started later (a lookup) is a new
    consumer, which reads what the stream holds now: it is not held back."""

    def __init__(self, lag: float) -> None:
        self.lag = lag

    async def watch(self, pattern: str = ">", *, since: int = 0) -> AsyncIterator[Entry | None]:
        if pattern != ">":
            async for entry in self.inner.watch(pattern, since=since):
                yield entry
            return
        shown: asyncio.Queue[Entry | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def follow() -> None:
            async for entry in self.inner.watch(pattern, since=since):
                if entry is None:
                    shown.put_nowait(None)
                elif self.lag != math.inf:
                    loop.call_later(self.lag, shown.put_nowait, entry)

        following = asyncio.create_task(follow())
        try:
            while True:
                yield await shown.get()
        finally:
            following.cancel()
