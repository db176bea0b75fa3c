"""The only module that imports `nats`: connection, request/reply, JetStream streams and KV.

Domain code sees `Bus`, `KV`, `Entry`, `Message` and `StreamMessage`, and Shoal's own errors;
every nats-py exception is translated in `map_nats_errors()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.api as jsapi
import nats.js.errors as jserrors
import yaml
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from shared.errors import Conflict, NotFound, ShoalError, Unavailable
from shared.pull import Status, pull_forever

log = logging.getLogger(__name__)

MSG_ID = "Nats-Msg-Id"


@contextlib.contextmanager
def map_nats_errors(what: str) -> Iterator[None]:
    """Translate nats-py errors into ShoalError, saying what we were doing."""
    try:
        yield
    except ShoalError:
        raise
    except jserrors.KeyWrongLastSequenceError as exc:
        raise Conflict(f"{what}: changed concurrently ({exc.description})") from exc
    except (jserrors.KeyNotFoundError, jserrors.NotFoundError) as exc:
        raise NotFound(f"{what}: not found") from exc
    except jserrors.BadRequestError as exc:
        if exc.err_code in (10071, 10164):  # wrong last sequence / key exists
            raise Conflict(f"{what}: changed concurrently ({exc.description})") from exc
        raise ShoalError(f"{what}: NATS refused the request ({exc.description})") from exc
    except nats.errors.NoRespondersError as exc:
        raise Unavailable(f"{what}: nobody is listening (is the service running?)") from exc
    except (TimeoutError, nats.errors.TimeoutError, jserrors.ServiceUnavailableError) as exc:
        raise Unavailable(f"{what}: timed out waiting for NATS") from exc
    except (nats.errors.ConnectionClosedError, nats.errors.NoServersError, OSError) as exc:
        raise Unavailable(f"{what}: NATS is unreachable ({exc})") from exc
    except nats.errors.Error as exc:
        raise ShoalError(f"{what}: {exc}") from exc


def creds_options(path: str) -> dict[str, Any]:
    """nats-py connect options from `--creds`: a NATS JWT .creds file, or Shoal's YAML
    (`user`, `password`, optional `tls_ca` relative to the file) from `shoal auth init`."""
    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except OSError as exc:
        raise ShoalError(f"cannot read credentials file {path}: {exc.strerror or exc}") from exc
    if "-----BEGIN NATS USER JWT-----" in text:
        return {"user_credentials": str(file)}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ShoalError(f"credentials file {path} is not YAML: {exc}") from exc
    if not isinstance(data, dict) or not data.get("user") or "password" not in data:
        raise ShoalError(
            f"credentials file {path} needs `user:` and `password:` lines "
            "(as written by `shoal auth init`) or must be a NATS .creds file"
        )
    options: dict[str, Any] = {"user": str(data["user"]), "password": str(data["password"])}
    if data.get("tls_ca"):
        options["tls_ca"] = str(file.parent / str(data["tls_ca"]))
    return options


def _reraise_cancel(exc: BaseException) -> None:
    """nats-py turns a cancellation into ConnectionClosedError once the connection is closed;
    swallowing it would keep a cancelled loop alive forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


class _Refused(Exception):
    """Connecting cannot succeed by retrying: credentials or certificate refused."""


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


class _PullSource:
    """`shared.pull`'s transport: pull requests to one durable consumer, answered on an inbox."""

    def __init__(
        self,
        nc: NatsClient,
        stream: str,
        durable: str,
        recover: Callable[[], Awaitable[None]],
    ) -> None:
        self._nc = nc
        self._recover = recover
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub: Any = None
        self.name = durable

    async def open(self) -> None:
        async def arrived(msg: Msg) -> None:
            self._queue.put_nowait(msg)

        with map_nats_errors(f"subscribe for {self.name}"):
            self._sub = await self._nc.subscribe(
                self._inbox, cb=arrived, pending_msgs_limit=1_000_000
            )

    @property
    def epoch(self) -> int:
        return int(self._nc.stats["reconnects"])

    async def recover(self) -> None:
        await self._recover()

    async def request(self, batch: int, expires: float, heartbeat: float) -> None:
        nanos = 1_000_000_000
        body = {
            "batch": batch,
            "expires": int(expires * nanos),
            "idle_heartbeat": int(heartbeat * nanos),
        }
        with map_nats_errors(f"pull from {self.name}"):
            await self._nc.publish(self._next, json.dumps(body).encode(), reply=self._inbox)

    async def next(self, timeout: float) -> StreamMessage | Status | None:
        try:
            async with asyncio.timeout(timeout):
                msg = await self._queue.get()
        except TimeoutError:
            return None
        return self._wrap(msg)

    def ready(self) -> list[StreamMessage | Status]:
        out: list[StreamMessage | Status] = []
        while not self._queue.empty():
            out.append(self._wrap(self._queue.get_nowait()))
        return out

    @staticmethod
    def _wrap(msg: Msg) -> StreamMessage | Status:
        status = msg.headers.get("Status") if msg.headers else None
        if not status:
            return StreamMessage(msg)
        unfilled = (msg.headers or {}).get("Nats-Pending-Messages", "")
        return Status(
            int(status) if status.isdigit() else 0, int(unfilled) if unfilled.isdigit() else None
        )

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()


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
        return Message(msg.subject, msg.data, msg.reply, None)

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

    async def delete(self, key: str) -> None:
        with map_nats_errors(f"delete {self.bucket}/{key}"):
            await self._kv.delete(key)

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


class Bus:
    """One NATS connection with the few operations Shoal needs."""

    def __init__(self, nc: NatsClient, replicas: int = 1) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.replicas = replicas
        self._subs: list[Any] = []
        self._inflight: set[asyncio.Task[None]] = set()  # concurrent handlers, cancelled on close

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        creds: str | None = None,
        name: str = "shoal",
        fail_fast: bool = False,
        replicas: int = 1,
        tls_ca: str | None = None,
    ) -> Bus:
        """Connect. `fail_fast` (the CLI) gives up after one quick try per server."""
        connecting = True

        async def on_error(exc: Exception) -> None:
            if connecting and "authorization violation" in str(exc).lower():
                # Out of nats.connect(): retrying an identity the server refused cannot help.
                raise _Refused(f"refused the credentials ({exc})") from exc
            if connecting and isinstance(exc, ssl.SSLError):
                # nats-py retries (and hangs) on a bad handshake; no retry can fix a certificate.
                raise _Refused(f"failed the TLS handshake ({exc})") from exc
            if "permissions violation" in str(exc).lower():
                log.warning("nats refused: %s (check this identity's permissions)", exc)
            else:
                log.debug("nats: %s", exc)

        options: dict[str, Any] = {
            "servers": [u.strip() for u in url.split(",") if u.strip()],
            "name": name,
            "error_cb": on_error,
            "connect_timeout": 2,
            "max_reconnect_attempts": 1 if fail_fast else -1,
            "reconnect_time_wait": 0.05 if fail_fast else 0.5,
            "ping_interval": 10,
        }
        if creds:
            options.update(creds_options(creds))
        ca_of_creds = options.pop("tls_ca", None)
        tls_ca = tls_ca or ca_of_creds
        if tls_ca:
            options["tls"] = ssl.create_default_context(cafile=tls_ca)
        nc = NatsClient()
        try:
            await nc.connect(**options)
        except _Refused as exc:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):  # closing after a failed TLS handshake can hang
                    await nc.close()
            hint = f"check {creds}" if creds else "pass --creds FILE"
            if tls_ca:
                hint += f" and the CA {tls_ca}"
            raise Unavailable(f"NATS at {url} {exc}: {hint}") from None
        except (TimeoutError, nats.errors.NoServersError, OSError) as exc:
            raise Unavailable(
                f"cannot reach NATS at {url} ({exc or type(exc).__name__}); "
                "is the server running? (start one with `shoal devstack`)"
            ) from exc
        except nats.errors.Error as exc:
            raise Unavailable(f"cannot connect to NATS at {url}: {exc}") from exc
        finally:
            connecting = False
        return cls(nc, replicas=replicas)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def close(self) -> None:
        for task in list(self._inflight):
            task.cancel()
        if self._nc.is_closed:
            return
        with contextlib.suppress(Exception):
            await self._nc.drain()
        with contextlib.suppress(Exception):
            await self._nc.close()

    async def flush(self) -> None:
        with map_nats_errors("flush"):
            await self._nc.flush(timeout=5)

    # ---- core NATS ----------------------------------------------------------------------------

    async def publish(self, subject: str, data: bytes) -> None:
        with map_nats_errors(f"publish {subject}"):
            await self._nc.publish(subject, data)

    async def request(self, subject: str, data: bytes, timeout: float = 5.0) -> bytes:
        with map_nats_errors(f"request {subject}"):
            msg = await self._nc.request(subject, data, timeout=timeout)
        return bytes(msg.data)

    async def respond(self, message: Message, data: bytes) -> None:
        if message.reply:
            with map_nats_errors(f"reply on {message.subject}"):
                await self._nc.publish(message.reply, data)

    async def subscribe(
        self, subject: str, handler: Handler, queue: str = "", *, concurrency: int = 1
    ) -> Any:
        """Call `handler` for each message: in order, one at a time, or with `concurrency`
        > 1 up to that many at once (request-reply handlers that wait on NATS themselves)."""
        slots = asyncio.Semaphore(concurrency)

        async def guarded(message: Message) -> None:
            try:
                await handler(message)
            except Exception:  # a handler bug must not kill the subscription
                log.exception("handler for %s failed", message.subject)

        async def in_slot(message: Message) -> None:
            try:
                await guarded(message)
            finally:
                slots.release()

        async def callback(msg: Msg) -> None:
            headers = dict(msg.headers) if msg.headers else None
            message = Message(msg.subject, msg.data, msg.reply, headers)
            if concurrency == 1:
                await guarded(message)
                return
            await slots.acquire()  # back-pressure: the subscription waits for a free slot
            task = asyncio.get_running_loop().create_task(in_slot(message))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        with map_nats_errors(f"subscribe {subject}"):
            sub = await self._nc.subscribe(
                subject, queue=queue, cb=callback, pending_msgs_limit=1_000_000
            )
        self._subs.append(sub)
        return sub

    async def unsubscribe(self, sub: Any) -> None:
        with contextlib.suppress(Exception):  # already gone with the connection
            await sub.unsubscribe()

    async def subscription(self, subject: str) -> Inbox:
        """A subscription read with `await inbox.next(timeout)`; live once this returns."""
        with map_nats_errors(f"subscribe {subject}"):
            sub = await self._nc.subscribe(subject)
        return Inbox(sub, subject)

    # ---- JetStream -------------------------------------------------------------------------------

    async def ensure_stream(
        self,
        name: str,
        subjects: list[str],
        *,
        work_queue: bool = False,
        max_msgs_per_subject: int = -1,
        max_bytes: int | None = None,
        max_age: float | None = None,
        duplicate_window: float = 120.0,
    ) -> None:
        config = jsapi.StreamConfig(
            name=name,
            subjects=subjects,
            retention=jsapi.RetentionPolicy.WORK_QUEUE
            if work_queue
            else jsapi.RetentionPolicy.LIMITS,
            storage=jsapi.StorageType.FILE,
            num_replicas=self.replicas,
            max_msgs_per_subject=max_msgs_per_subject,
            max_bytes=max_bytes,
            max_age=max_age,
            duplicate_window=duplicate_window,
            allow_direct=True,
        )
        with map_nats_errors(f"create stream {name}"):
            try:
                await self._js.add_stream(config)
            except jserrors.BadRequestError:
                await self._js.update_stream(config)

    async def js_publish(
        self, subject: str, data: bytes, msg_id: str = "", timeout: float = 5.0
    ) -> int:
        """Durable publish; `msg_id` makes a resend within the duplicate window a no-op."""
        headers = {MSG_ID: msg_id} if msg_id else None
        with map_nats_errors(f"publish {subject}"):
            ack = await self._js.publish(subject, data, timeout=timeout, headers=headers)
        return int(ack.seq)

    async def consume(
        self,
        stream: str,
        durable: str,
        subject: str,
        handle: Callable[[list[StreamMessage]], Awaitable[None]],
        *,
        batch: int = 256,
        ack_wait: float = 30.0,
    ) -> None:
        """Forever: hand what the durable consumer delivers to `handle` (as many at once as have
        arrived), which acks what it applied. NATS trouble is logged and retried, never fatal."""
        config = jsapi.ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=jsapi.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,
            max_ack_pending=20_000,
        )

        async def ensure_consumer() -> None:
            with map_nats_errors(f"consumer {durable} on {stream}"):
                try:
                    await self._js.consumer_info(stream, durable)
                except jserrors.NotFoundError:
                    await self._js.add_consumer(stream, config)

        await ensure_consumer()
        source = _PullSource(self._nc, stream, durable, ensure_consumer)
        await source.open()

        async def guarded(msgs: list[StreamMessage]) -> None:
            try:
                await handle(msgs)
            except ShoalError as exc:
                log.warning("%s on %s: %s", durable, stream, exc)
            except Exception:  # a bug must not stop the consumer; unacked ones come back
                log.exception("%s on %s: handling a batch failed", durable, stream)
                await asyncio.sleep(1.0)

        async def trouble(exc: ShoalError) -> None:
            log.warning("%s on %s: %s", durable, stream, exc)
            await asyncio.sleep(1.0)

        try:
            await pull_forever(source, guarded, batch=batch, on_error=trouble)
        finally:
            await source.close()

    async def replay(
        self, stream: str, subject: str, *, follow: bool = False, idle: float = 0.5
    ) -> AsyncIterator[StreamMessage]:
        """Every stored message on `subject` in order; with `follow`, then new ones forever."""
        with map_nats_errors(f"read {stream}"):
            try:
                info = await self._js.stream_info(stream, subjects_filter=subject)
                pending = sum((info.state.subjects or {}).values()) if info.state else 0
            except jserrors.NotFoundError:
                pending = 0
            if pending == 0 and not follow:
                return
            sub = await self._js.subscribe(
                subject,
                stream=stream,
                ordered_consumer=True,
                deliver_policy=jsapi.DeliverPolicy.ALL,
            )
        seen = 0
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=None if follow else idle * 10)
                except (TimeoutError, nats.errors.TimeoutError):
                    return
                seen += 1
                yield StreamMessage(msg)
                if not follow and seen >= pending:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def object_store(self, bucket: str) -> ObjectStore:
        """Open (creating if needed) an object store bucket."""
        with map_nats_errors(f"open object store {bucket}"):
            try:
                store = await self._js.object_store(bucket)
            except (jserrors.BucketNotFoundError, jserrors.NotFoundError):
                config = jsapi.ObjectStoreConfig(
                    bucket=bucket, replicas=self.replicas, storage=jsapi.StorageType.FILE
                )
                store = await self._js.create_object_store(bucket, config=config)
        return ObjectStore(store, bucket)

    async def kv(self, bucket: str, *, history: int = 1, ttl: float | None = None) -> KV:
        """Open (creating if needed) a KV bucket."""
        with map_nats_errors(f"open bucket {bucket}"):
            try:
                kv = await self._js.key_value(bucket)
            except jserrors.BucketNotFoundError:
                config = jsapi.KeyValueConfig(
                    bucket=bucket,
                    history=history,
                    ttl=ttl,
                    replicas=self.replicas,
                    storage=jsapi.StorageType.FILE,
                )
                kv = await self._js.create_key_value(config)
        return KV(kv, bucket)
