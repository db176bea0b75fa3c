"""What the bus hands out: messages, KV entries and buckets, stream messages, inboxes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors as jserrors
from nats.aio.msg import Msg

from shared.bus._errors import _reraise_cancel, map_nats_errors
from shared.errors import Conflict, NotFound, Unavailable


@dataclass(frozen=True, slots=True)
class Message:
    """A core NATS message; `reply` is empty when no answer is expected."""

    subject: str
    data: bytes
    reply: str
    headers: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class Entry:
    """A KV value with its revision (for CAS); `value` is None for a deleted key."""

    key: str
    value: bytes | None
    revision: int


Handler = Callable[[Message], Awaitable[None]]


class StreamMessage:
    """A JetStream message from a pull consumer, to ack once applied."""

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.subject = msg.subject
        self.data = msg.data
        self.headers = msg.headers
        meta = msg.metadata
        self.delivered = meta.num_delivered
        self.sequence = meta.sequence.stream
        self.timestamp = meta.timestamp

    async def ack(self) -> None:
        with map_nats_errors("ack"):
            await self._msg.ack()

    async def nak(self, delay: float | None = None) -> None:
        with map_nats_errors("nak"):
            await self._msg.nak(delay=delay)

    async def term(self) -> None:
        with map_nats_errors("term"):
            await self._msg.term()


class Inbox:
    """Messages on one subject, pulled one at a time; close() when done."""

    def __init__(self, sub: Any, subject: str) -> None:
        self._sub = sub
        self.subject = subject

    async def next(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after `timeout` seconds."""
        try:
            msg = await self._sub.next_msg(timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            return None
        except nats.errors.ConnectionClosedError as exc:
            _reraise_cancel(exc)
            raise Unavailable(f"subscription {self.subject}: connection closed") from exc
        return Message(msg.subject, msg.data, msg.reply, msg.headers)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


class KV:
    """A JetStream key-value bucket with compare-and-swap writes."""

    def __init__(self, kv: Any, bucket: str) -> None:
        self._kv = kv
        self.bucket = bucket

    async def get(self, key: str) -> Entry | None:
        try:
            entry = await self._kv.get(key)
        except (jserrors.KeyNotFoundError, jserrors.KeyDeletedError):
            return None
        except Exception as exc:
            with map_nats_errors(f"read {self.bucket}/{key}"):
                raise exc
            raise
        return Entry(key, entry.value, entry.revision)

    async def create(self, key: str, value: bytes) -> int:
        """Write only if the key does not exist (or was deleted); Conflict otherwise."""
        with map_nats_errors(f"create {self.bucket}/{key}"):
            try:
                return int(await self._kv.create(key, value))
            except jserrors.KeyWrongLastSequenceError as exc:
                raise Conflict(f"{self.bucket}/{key} already exists") from exc

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Compare-and-swap: write only if the key is still at `revision`."""
        if revision <= 0:
            return await self.create(key, value)
        with map_nats_errors(f"update {self.bucket}/{key}"):
            return int(await self._kv.update(key, value, last=revision))

    async def put(self, key: str, value: bytes) -> int:
        with map_nats_errors(f"put {self.bucket}/{key}"):
            return int(await self._kv.put(key, value))

    async def delete(self, key: str, revision: int | None = None) -> None:
        """Delete the key; with `revision`, only if it is still at that revision (Conflict)."""
        with map_nats_errors(f"delete {self.bucket}/{key}"):
            await self._kv.delete(key, last=revision)

    async def keys(self, pattern: str = ">") -> list[str]:
        out: list[str] = []
        async for entry in self.watch(pattern, meta_only=True):
            if entry is None:
                break
            if entry.value is not None:
                out.append(entry.key)
        return out

    async def watch(
        self, pattern: str = ">", *, meta_only: bool = False
    ) -> AsyncIterator[Entry | None]:
        """Current values, then None (caught up), then every change, forever."""
        with map_nats_errors(f"watch {self.bucket}/{pattern}"):
            watcher = await self._kv.watch(pattern, meta_only=meta_only, inactive_threshold=30)
        try:
            while True:
                item = await watcher.updates(timeout=None)
                if item is None:
                    yield None
                    continue
                deleted = item.operation in ("DEL", "PURGE")
                yield Entry(item.key, None if deleted else (item.value or b""), item.revision)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()


class ObjectStore:
    """A JetStream object store bucket: whole files in, whole files out."""

    def __init__(self, store: Any, bucket: str) -> None:
        self._store = store
        self.bucket = bucket

    async def put_file(self, name: str, path: str) -> int:
        with map_nats_errors(f"store {self.bucket}/{name}"), open(path, "rb") as f:
            info = await self._store.put(name, f)
        return int(info.size)

    async def get_into(self, name: str, path: str) -> None:
        with map_nats_errors(f"fetch {self.bucket}/{name}"), open(path, "wb") as f:
            try:
                await self._store.get(name, writeinto=f)
            except jserrors.ObjectNotFoundError as exc:
                raise NotFound(f"{self.bucket}/{name} does not exist") from exc
