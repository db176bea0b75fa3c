"""The only package that imports `nats`: connection, request/reply, JetStream streams and KV.

Domain code sees `Bus`, `KV`, `Entry`, `Message` and `StreamMessage`, and Shoal's own errors;
every nats-py exception is translated in `map_nats_errors()` (`_errors`). The handles the bus
hands out live in `_handles`, the pull consumer's transport in `_pullsource`, nats-py's
connection with a cheaper header parser in `_client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import nats.errors
import nats.js.api as jsapi
import nats.js.errors as jserrors
from nats.aio.msg import Msg

from shared.bus._client import NatsClient
from shared.bus._credentials import creds_namespace, creds_options
from shared.bus._errors import _Refused, map_nats_errors
from shared.bus._handles import (
    KV,
    Entry,
    Handler,
    Inbox,
    Message,
    ObjectStore,
    StreamMessage,
    Subscription,
)
from shared.bus._pullsource import _PullSource
from shared.bus._replies import Replies
from shared.errors import InvalidSpec, ShoalError, Unavailable
from shared.pull import pull_forever

__all__ = [
    "KV",
    "Bus",
    "Entry",
    "Handler",
    "Inbox",
    "Message",
    "ObjectStore",
    "StreamMessage",
    "Subscription",
    "creds_namespace",
    "creds_options",
    "map_nats_errors",
]

log = logging.getLogger(__name__)

MSG_ID = "Nats-Msg-Id"


INBOX_PREFIX = "_INBOX."
# Headers JetStream puts on what it hands out itself (direct gets, republished records).
_JETSTREAM_HEADERS = ("Nats-Stream", "Nats-Sequence")
_JETSTREAM_ANSWER = b'{"type":"io.nats.jetstream.api.'  # how every JetStream API answer starts


def _from_jetstream(msg: Msg) -> bool:
    """A message JetStream sent, not a client: a push consumer's delivery (reply
    `$JS.ACK.…`), a direct get's answer (`Nats-Stream` headers), an API answer.

    Whoever may create a consumer or ask for a stored message chooses where it goes (a
    consumer's deliver subject, a request's reply subject), and NATS checks no permission
    there (nats-io/nats-server#8274): a user could have the server deliver their own log
    lines, whose content their job chose, to a node's command subject or another
    namespace's API. Shoal's core subscriptions never expect JetStream's messages."""
    if msg.reply.startswith("$JS.") or msg.data.startswith(_JETSTREAM_ANSWER):
        return True
    headers = msg.headers or {}
    return any(h in headers for h in _JETSTREAM_HEADERS)


def _consumer_name() -> str:
    return f"shoal-read-{secrets.token_hex(8)}"


def _rename_on_reset(js: Any, sub: Any, stream: str, name: str) -> None:
    """Shoal names its ordered consumers, so that creating one carries its filter in the
    subject (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`) and NATS permissions can
    allow a user only its namespaces' logs. nats-py recreates an ordered consumer after a
    gap or missed heartbeats with the config it was made with; the same name would clash
    with the old consumer (alive until its inactivity threshold), so each recreation gets a
    new name and deletes the old consumer."""
    jsi = getattr(getattr(sub, "_sub", None), "_jsi", None)
    recreate = getattr(jsi, "recreate_consumer", None)
    if jsi is None or recreate is None:
        return
    count = itertools.count(1)

    async def renamed() -> None:
        old = getattr(sub, "_consumer", None)
        jsi._ccreq.name = f"{name}-{next(count)}"
        await recreate()
        if old:
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream, old)

    jsi.recreate_consumer = renamed


class Bus:
    """One NATS connection with the few operations Shoal needs."""

    def __init__(self, nc: NatsClient, replicas: int = 1) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._replies = Replies(nc)
        self.replicas = replicas
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
        made: list[Bus] = []  # the bus, once there is one: refusals fail its requests at once

        async def on_error(exc: Exception) -> None:
            if connecting and "authorization violation" in str(exc).lower():
                # Out of nats.connect(): retrying an identity the server refused cannot help.
                raise _Refused(f"refused the credentials ({exc})") from exc
            if connecting and isinstance(exc, ssl.SSLError):
                # nats-py retries (and hangs) on a bad handshake; no retry can fix a certificate.
                raise _Refused(f"failed the TLS handshake ({exc})") from exc
            if "permissions violation" in str(exc).lower():
                log.warning("nats refused: %s (check this identity's permissions)", exc)
                for bus in made:
                    bus._replies.refused(str(exc))
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
            try:
                options["tls"] = ssl.create_default_context(cafile=tls_ca)
            except (OSError, ssl.SSLError) as exc:
                why = getattr(exc, "strerror", None) or exc
                raise InvalidSpec(f"cannot read the TLS CA certificate {tls_ca}: {why}") from None
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
        made.append(cls(nc, replicas=replicas))
        return made[0]

    @property
    def max_payload(self) -> int:
        """The largest message the server takes (its max_payload)."""
        return int(self._nc.max_payload)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def reconnects(self) -> int:
        """How often the connection was re-established (core messages may be lost meanwhile)."""
        return int(self._nc.stats["reconnects"])

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
        msg = await self._replies.request(subject, data, what=f"request {subject}", timeout=timeout)
        return bytes(msg.data)

    async def respond(self, message: Message, data: bytes) -> None:
        """Answer a request, on its reply subject if that is an inbox (`_INBOX.…`).

        A requester chooses the reply subject, and NATS checks no permission on it: an
        answer to `shoal.v1.compute.<node>.cmd` would be published with the responder's
        permissions (the orchestrator's reach everything). Every Shoal client asks from an
        inbox, so any other reply subject is an attempt to use the responder as a deputy."""
        if not message.reply:
            return
        if not message.reply.startswith(INBOX_PREFIX):
            log.warning(
                "not answering %s on %s: a reply subject must be an inbox (_INBOX.…)",
                message.subject,
                message.reply,
            )
            return
        with map_nats_errors(f"reply on {message.subject}"):
            await self._nc.publish(message.reply, data)

    async def subscribe(
        self, subject: str, handler: Handler, queue: str = "", *, concurrency: int = 1
    ) -> Subscription:
        """Call `handler` for each message: in order, one at a time, or with `concurrency`
        > 1 up to that many at once (request-reply handlers that wait on NATS themselves)."""
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()

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
            if _from_jetstream(msg):
                log.warning(
                    "dropped a message JetStream delivered to %s (reply %r): core "
                    "subscriptions take only what a client published",
                    subject,
                    msg.reply,
                )
                return
            headers = dict(msg.headers) if msg.headers else None
            message = Message(msg.subject, msg.data, msg.reply, headers)
            if concurrency == 1:
                await guarded(message)
                return
            await slots.acquire()  # back-pressure: the subscription waits for a free slot
            task = asyncio.get_running_loop().create_task(in_slot(message))
            self._inflight.add(task)
            running.add(task)
            task.add_done_callback(self._inflight.discard)
            task.add_done_callback(running.discard)

        with map_nats_errors(f"subscribe {subject}"):
            sub = await self._nc.subscribe(
                subject, queue=queue, cb=callback, pending_msgs_limit=1_000_000
            )
        return Subscription(sub, running)

    async def unsubscribe(self, sub: Subscription) -> None:
        await sub.unsubscribe()

    async def subscription(self, subject: str) -> Inbox:
        """A subscription read with `await inbox.next(timeout)`; live once this returns."""
        inbox = Inbox(subject, lambda: bool(self._nc.is_closed))

        async def arrived(msg: Msg) -> None:
            # Republished records come from JetStream too (Nats-Stream headers, no reply);
            # a consumer's delivery or an API answer sent here by someone's choice does not.
            if msg.reply.startswith("$JS.") or msg.data.startswith(_JETSTREAM_ANSWER):
                log.warning("dropped a message JetStream delivered to %s", subject)
                return
            await inbox._arrived(msg)

        with map_nats_errors(f"subscribe {subject}"):
            inbox._sub = await self._nc.subscribe(subject, cb=arrived, pending_msgs_limit=1_000_000)
        return inbox

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
        return await self._replies.store(
            subject, data, headers, what=f"publish {subject}", timeout=timeout
        )

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
        self,
        stream: str,
        subject: str,
        *,
        follow: bool = False,
        idle: float = 0.5,
        after: int = 0,
    ) -> AsyncIterator[StreamMessage]:
        """Every stored message on `subject` in order (only those stored after stream sequence
        `after`); with `follow`, then new ones forever.

        Opening the read is tried three times: right after a cluster member is lost, creating
        a consumer can time out until JetStream has re-elected its leaders."""
        for attempt in range(3):
            try:
                with map_nats_errors(f"read {stream}"):
                    try:
                        info = await self._js.stream_info(stream, subjects_filter=subject)
                        pending = sum((info.state.subjects or {}).values()) if info.state else 0
                    except jserrors.NotFoundError:
                        pending = 0
                    if pending == 0 and not follow:
                        return
                    name = _consumer_name()
                    sub = await self._js.subscribe(
                        subject,
                        stream=stream,
                        ordered_consumer=True,
                        deliver_policy=jsapi.DeliverPolicy.BY_START_SEQUENCE
                        if after
                        else jsapi.DeliverPolicy.ALL,
                        config=jsapi.ConsumerConfig(
                            name=name, opt_start_seq=after + 1 if after else None
                        ),
                    )
                    _rename_on_reset(self._js, sub, stream, name)
                    nothing_after = False
                    if after and not follow:
                        # How many lie past `after` is told by each message (its pending);
                        # none at all, by the consumer.
                        consumer = await sub.consumer_info()
                        nothing_after = consumer.num_pending == 0 and sub.delivered == 0
                break
            except Unavailable as exc:
                if attempt == 2 or not self.connected:
                    raise
                log.info("reading %s: %s; trying again", stream, exc)
                await asyncio.sleep(0.5)
        seen = 0
        try:
            while not nothing_after:
                try:
                    msg = await sub.next_msg(timeout=None if follow else idle * 10)
                except (TimeoutError, nats.errors.TimeoutError):
                    return
                seen += 1
                message = StreamMessage(msg)
                yield message
                if not follow and (message.position()[1] == 0 if after else seen >= pending):
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            # The ephemeral consumer would outlive the subscription by its inactivity threshold
            # (5 s), and the server refuses a stream's 1001st: a burst of history or log reads
            # (a dashboard, a script over many jobs) failed. Delete it now.
            made = getattr(sub, "_consumer", None)
            if made:
                with contextlib.suppress(Exception):
                    await self._js.delete_consumer(stream, made)

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

    async def kv(
        self,
        bucket: str,
        *,
        history: int = 1,
        ttl: float | None = None,
        republish: tuple[str, str] | None = None,
    ) -> KV:
        """Open (creating if needed) a KV bucket; `republish` = (source, destination) has the
        server republish every stored value, and is added to a bucket created without it."""
        wanted = None if republish is None else jsapi.RePublish(*republish)
        created = False
        with map_nats_errors(f"open bucket {bucket}"):
            try:
                kv = await self._js.key_value(bucket)
            except jserrors.BucketNotFoundError:
                created = True
                config = jsapi.KeyValueConfig(
                    bucket=bucket,
                    history=history,
                    ttl=ttl,
                    replicas=self.replicas,
                    storage=jsapi.StorageType.FILE,
                    republish=wanted,
                    direct=self.replicas == 1,  # (KV.latest)
                )
                kv = await self._js.create_key_value(config)
        if wanted is not None and not created:
            try:
                with map_nats_errors(f"add the republish of bucket {bucket}"):
                    await self._ensure_republish(f"KV_{bucket}", wanted)
            except ShoalError as exc:
                # Only a shortcut for clients (they fall back to the API), never a reason
                # not to start.
                log.warning("%s; clients will wait on the API instead", exc)
        version = self._nc.connected_server_version
        batched = (version.major, version.minor) >= (2, 11)
        return KV(kv, self._js, bucket, self._replies, batched_gets=batched)

    async def _ensure_republish(self, stream: str, wanted: jsapi.RePublish) -> None:
        config = (await self._js.stream_info(stream)).config
        have = config.republish
        if have is None or (have.src, have.dest, bool(have.headers_only)) != (
            wanted.src,
            wanted.dest,
            bool(wanted.headers_only),
        ):
            config.republish = wanted
            await self._js.update_stream(config)
