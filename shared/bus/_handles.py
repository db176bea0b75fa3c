"""What the bus hands out: messages, KV entries and buckets, stream messages, inboxes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats.js.api as jsapi
import nats.js.errors as jserrors
from nats.aio.msg import Msg

from shared.bus._errors import map_nats_errors
from shared.bus._latest import Found, direct_gets_allowed, read_newest
from shared.bus._replies import Replies
from shared.errors import Conflict, NotFound, ShoalError, Unavailable


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


def _sequence_and_pending(reply: str) -> tuple[int, int]:
    """The stream sequence and the pending count from a JetStream message's reply subject,
    without nats-py's `Msg.metadata` (a dataclass and a datetime per message)."""
    tokens = reply.split(".")
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>, or the v2 form
    # with <domain>.<account hash> after ACK and a random token at the end.
    at = 5 if len(tokens) == 9 else 7
    return int(tokens[at]), int(tokens[at + 3])


class StreamMessage:
    """A JetStream message from a consumer, to ack once applied (its metadata is parsed only
    when `position()` asks)."""

    __slots__ = ("_msg", "data", "headers", "subject")

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.subject = msg.subject
        self.data = msg.data
        self.headers = msg.headers

    def position(self) -> tuple[int, int]:
        """Its stream sequence, and how many the consumer holds after it."""
        return _sequence_and_pending(self._msg.reply)

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
    """Messages on one subject, read one at a time; close() when done.

    Fed by a callback subscription: nats-py's `next_msg()` creates two tasks and draws a
    random task name per call, and a client reads several messages per job this way."""

    def __init__(self, subject: str, closed: Callable[[], bool]) -> None:
        self.subject = subject
        self._closed = closed
        self._sub: Any = None
        self._ready: collections.deque[Message] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    async def _arrived(self, msg: Msg) -> None:
        self._ready.append(Message(msg.subject, msg.data, msg.reply, msg.headers))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._ready:
            if self._closed():
                raise Unavailable(f"subscription {self.subject}: connection closed")
            left = 1.0 if deadline is None else deadline - loop.time()
            if left <= 0:
                return None
            waiter = self._waiter = loop.create_future()
            # At most a second at a time: a connection closed meanwhile is noticed.
            expiry = loop.call_later(min(left, 1.0), _wake, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                expiry.cancel()
        return self._ready.popleft()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


class Subscription:
    """A handler subscription (`Bus.subscribe`)."""

    def __init__(self, sub: Any, running: set[asyncio.Task[None]]) -> None:
        self._sub = sub
        self._running = running  # its handlers now running (concurrency > 1)

    async def unsubscribe(self) -> None:
        with contextlib.suppress(Exception):  # already gone with the connection
            await self._sub.unsubscribe()

    async def drain(self, timeout: float) -> bool:
        """Take no more messages, handle those already received, and wait for the handlers
        still running; False if they had not all finished within `timeout` seconds, in
        which case (or if cancelled) the rest is dropped and the handlers cancelled."""
        try:
            async with asyncio.timeout(timeout):
                with contextlib.suppress(Exception):  # the connection is gone: nothing to handle
                    await self._sub.drain()
                while self._running:
                    await asyncio.wait(set(self._running))
        except TimeoutError:
            self._abandon()
            return False
        except BaseException:
            self._abandon()
            raise
        return True

    def _abandon(self) -> None:
        # nats-py's drain, cut short, has marked the subscription closed (so unsubscribe()
        # refuses) but left it registered with its task still handling what had arrived,
        # and resubscribed after a reconnect: take it out by hand.
        sub = self._sub
        sub._stop_processing()
        sub._conn._remove_sub(sub._id)
        for task in self._running:
            task.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_KEY = re.compile(r"[-/_=.a-zA-Z0-9]+")
_WATCH_HEARTBEAT = 0.5  # checked every two of these: a silent watch is re-created in 1-2 s
_KV_OPERATION = "KV-Operation"
_MARKER_REASON = "Nats-Marker-Reason"  # nats-server 2.11+: markers the server itself places
_MARKERS = {"MaxAge": "PURGE", "Purge": "PURGE", "Remove": "DEL"}
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"


def _valid_key(key: str) -> bool:
    return bool(_KEY.fullmatch(key)) and key[0] != "." and key[-1] != "." and ".." not in key


class KV:
    """A JetStream key-value bucket with compare-and-swap writes."""

    def __init__(
        self, kv: Any, js: Any, bucket: str, replies: Replies, *, batched_gets: bool = False
    ) -> None:
        self._kv = kv
        self._js = js
        self._replies = replies
        self._prefix = f"$KV.{bucket}."
        self.bucket = bucket
        # The server answers batched direct gets (2.11 on); whether this bucket's stream
        # takes them is asked once, by `latest`.
        self._batched: bool | None = None if batched_gets else False

    async def _write(self, key: str, value: bytes, last: int | None, what: str) -> int:
        if not _valid_key(key):
            raise ShoalError(f"{what}: {key!r} is not a valid key")
        headers = None if last is None else {_EXPECTED_LAST: str(last)}
        return await self._replies.store(self._prefix + key, value, headers, what=what)

    async def get(self, key: str) -> Entry | None:
        """The key's entry, or None if it has none (or could never have one: not a valid
        key, e.g. made from a hostile message's ids)."""
        if not _valid_key(key):
            return None
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
        what = f"create {self.bucket}/{key}"
        try:
            return await self._write(key, value, 0, what)
        except Conflict:
            pass
        # The key has a history: a delete marker may be written over, a value may not.
        try:
            await self._kv.get(key)
        except jserrors.KeyNotFoundError as exc:
            last = 0 if exc.entry is None else exc.entry.revision  # 0: purged meanwhile
            try:
                return await self._write(key, value, last, what)
            except Conflict:  # another create got there first
                raise Conflict(f"{self.bucket}/{key} already exists") from None
        except Exception as exc:
            with map_nats_errors(what):
                raise exc
            raise
        raise Conflict(f"{self.bucket}/{key} already exists")

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Compare-and-swap: write only if the key is still at `revision`."""
        if revision <= 0:
            return await self.create(key, value)
        return await self._write(key, value, revision, f"update {self.bucket}/{key}")

    async def put(self, key: str, value: bytes) -> int:
        return await self._write(key, value, None, f"put {self.bucket}/{key}")

    async def delete(self, key: str, revision: int | None = None) -> None:
        """Delete the key; with `revision`, only if it is still at that revision (Conflict)."""
        what = f"delete {self.bucket}/{key}"
        if not _valid_key(key):
            raise ShoalError(f"{what}: {key!r} is not a valid key")
        # A delete marker as nats-py writes one, sent on the bus's own inbox (_replies.py).
        headers = {_KV_OPERATION: "DEL"}
        if revision:
            headers[_EXPECTED_LAST] = str(revision)
        await self._replies.store(self._prefix + key, b"", headers, what=what)

    async def keys(self, pattern: str = ">") -> list[str]:
        out: list[str] = []
        async for entry in self.watch(pattern, meta_only=True):
            if entry is None:
                break
            if entry.value is not None:
                out.append(entry.key)
        return out

    async def last_revision(self) -> int:
        """The revision of the bucket's newest write (0: none yet)."""
        with map_nats_errors(f"read {self.bucket}"):
            info = await self._js.stream_info(f"KV_{self.bucket}")
        return int(info.state.last_seq)

    async def entries(self) -> int:
        """How many entries the bucket stores: every revision it keeps, delete markers too
        (what a replay of it reads at most)."""
        with map_nats_errors(f"read {self.bucket}"):
            info = await self._js.stream_info(f"KV_{self.bucket}")
        return int(info.state.messages)

    async def latest(self, patterns: Sequence[str]) -> list[Entry] | None:
        """The newest entry under each of `patterns` (delete markers too), a few requests for
        all of them; None where the bucket is not read that way (watch each pattern then)."""
        if self._batched is None:
            self._batched = await direct_gets_allowed(self._js, self.bucket)
            if self._batched is None:  # not known yet: asked again next time
                return None
        if not self._batched:
            return None
        found = await read_newest(self._replies, self.bucket, patterns, self._caught_up)
        return [Entry(key, value, revision) for key, value, revision in found]

    async def _caught_up(self, pattern: str) -> Found:
        out: Found = []
        async with contextlib.aclosing(self.watch(pattern)) as entries:
            async for entry in entries:
                if entry is None:
                    return out
                out.append((entry.key, entry.value, entry.revision))
        return out

    async def watch(
        self, pattern: str = ">", *, meta_only: bool = False, since: int = 0
    ) -> AsyncGenerator[Entry | None, None]:
        """Current values, then None (caught up), then every change, forever. With `since`,
        every write from that revision on instead of the current values."""
        updates: asyncio.Queue[Entry | None] = asyncio.Queue()
        sub, nothing_stored = await self._subscribe(pattern, updates.put_nowait, meta_only, since)
        try:
            if nothing_stored:
                updates.put_nowait(None)
            while True:
                yield await updates.get()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def follow(
        self, pattern: str, apply: Callable[[Entry | None], None], *, since: int = 0
    ) -> None:
        """`watch`, calling `apply` with each entry as it arrives rather than handing it on
        through a queue (a restart replays every job through this); runs until cancelled, and
        ends with the error if `apply` raises."""
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def guarded(entry: Entry | None) -> None:
            try:
                apply(entry)
            except Exception as exc:
                if not failed.done():
                    failed.set_exception(exc)

        sub, nothing_stored = await self._subscribe(pattern, guarded, False, since)
        try:
            if nothing_stored:
                guarded(None)
            await failed
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _subscribe(
        self, pattern: str, put: Callable[[Entry | None], None], meta_only: bool, since: int
    ) -> tuple[Any, bool]:
        """An ordered consumer that hands `put` each entry, then None once caught up; and
        whether the bucket held nothing to replay (then no None comes: the caller says it)."""
        caught_up = False
        cut = len(self._prefix)

        async def on_msg(msg: Msg) -> None:
            # The ordered consumer's callback: straight to `put`, where nats-py's watcher had
            # two queues and parsed each message's metadata into dataclasses.
            nonlocal caught_up
            revision, pending = _sequence_and_pending(msg.reply)
            headers = msg.headers
            deleted = False
            if headers:
                op = headers.get(_KV_OPERATION)
                if op is None and _MARKER_REASON in headers:
                    op = _MARKERS.get(headers[_MARKER_REASON], "")
                if op == "":  # a marker of a kind this code does not know: not a value
                    revision = 0
                deleted = op in ("DEL", "PURGE")
            if revision:
                value = None if deleted else (msg.data or b"")
                put(Entry(msg.subject[cut:], value, revision))
            if pending == 0 and not caught_up:
                caught_up = True
                put(None)

        with map_nats_errors(f"watch {self.bucket}/{pattern}"):
            sub = await self._js.subscribe(
                self._prefix + pattern,
                stream=f"KV_{self.bucket}",
                cb=on_msg,
                ordered_consumer=True,
                config=jsapi.ConsumerConfig(opt_start_seq=since) if since else None,
                deliver_policy=jsapi.DeliverPolicy.BY_START_SEQUENCE
                if since
                else jsapi.DeliverPolicy.LAST_PER_SUBJECT,
                headers_only=meta_only,
                # A consumer nobody listens to any more (one re-created while the cluster
                # elected leaders, answered late) goes soon; a live watch's is re-created.
                inactive_threshold=5,
                # nats-py re-creates an ordered consumer after two missed heartbeats. With its
                # default of 5 s a watch stayed several heartbeats behind when the server
                # holding the consumer died (a failed re-create waits for the next check): the
                # orchestrators' mirrors, and every answer read from them, fell that far behind
                # (docs/reliability.md).
                idle_heartbeat=_WATCH_HEARTBEAT,
            )
        try:
            with map_nats_errors(f"watch {self.bucket}/{pattern}"):
                info = await sub.consumer_info()
        except BaseException:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            raise
        # What the server says it delivered, not what this client has parsed: in a cluster
        # the messages can come through a route after this answer, and a watch that said
        # "caught up" before them read a job's executions as none (a restarted orchestrator
        # then held a daemon's copies as gone).
        sent = info.delivered.consumer_seq if info.delivered is not None else 0
        nothing_stored = not info.num_pending and not sent and not caught_up
        if nothing_stored:
            caught_up = True
        return sub, nothing_stored


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
