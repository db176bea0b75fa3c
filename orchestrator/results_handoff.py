"""Hands an execution's result archive from its node's staging bucket to its namespace's bucket.

A node may write only `shoal-results-node-<node-id>`, so no node can touch another execution's
results; the users of a namespace read `shoal-results-ns-<namespace>`, which only orchestrators
write. The copy streams one chunk at a time (STREAM.MSG.GET in, a stored publish out), is
idempotent (an object already there with the same digest is not copied again), and deletes the
node's copy once done: the node bucket is a staging area, not a second home for the archive.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from shared import results, wire
from shared.bus import Bus
from shared.errors import ShoalError
from shared.memory import shrink
from shared.results import StoredObject

log = logging.getLogger(__name__)

COPIES_IN_FLIGHT = 8  # copies at once; the rest wait their turn (each holds one chunk)
QUICK = 0.5  # how long the applier waits on a copy before asking again later
_KEEP_DONE = 120.0  # seconds an outcome nobody asked for again is kept (leadership moved)


class CopyPending(Exception):
    """The copy is under way: apply the report once it is redelivered (not an error)."""


async def copy_result(
    bus: Bus, node_id: str, namespace: str, name: str, *, opened: set[str] | None = None
) -> StoredObject | None:
    """Copy `name` from the node's bucket into the namespace's (creating it on first use) and
    delete the node's copy; the stored object, or None if the node's bucket does not hold it
    (and the namespace's does not either). `opened`: buckets known to exist already."""
    dst_bucket = results.namespace_bucket(namespace)
    src_bucket = results.node_bucket(node_id)
    src = await results.object_info(bus, src_bucket, name)
    if src is None:
        # Written by a node wired before issue 20 into the shared bucket: copy, never delete
        # (older clients read it there).
        src = await results.object_info(bus, results.LEGACY_BUCKET, name)
    dst = await results.object_info(bus, dst_bucket, name)
    if dst is None or (src is not None and dst.digest != src.digest):
        if src is None:
            return None
        if opened is None or dst_bucket not in opened:
            await bus.object_store(dst_bucket)  # creates the bucket (its stream) if missing
            if opened is not None:
                opened.add(dst_bucket)
        dst = await _stream_copy(bus, src, dst_bucket, replacing=dst)
    if src is not None and src.bucket == src_bucket:
        await _delete(bus, src)
    return dst


async def _stream_copy(
    bus: Bus, src: StoredObject, bucket: str, *, replacing: StoredObject | None
) -> StoredObject:
    nuid = uuid.uuid4().hex
    subject = results.chunk_subject(bucket, nuid)
    try:
        async for chunk in results.object_chunks(bus, src):
            await bus.js_publish(subject, chunk)
        meta: dict[str, Any] = msgspec.json.decode(src.raw)
        meta.update(bucket=bucket, nuid=nuid, mtime=datetime.now(UTC).isoformat())
        meta.pop("deleted", None)
        raw = msgspec.json.encode(meta)
        await bus.js_publish(results.meta_subject(bucket, src.name), raw)
    except BaseException:
        await _purge(bus, bucket, subject, quiet=True)
        raise
    if replacing is not None:  # what nats-py's put does with a rollup header, by hand
        await _purge(bus, bucket, results.meta_subject(bucket, src.name), keep=1)
        await _purge(bus, bucket, results.chunk_subject(bucket, replacing.nuid))
    return StoredObject(bucket, src.name, nuid, src.size, src.chunks, src.digest, raw)


async def _delete(bus: Bus, obj: StoredObject) -> None:
    """Remove the object outright, chunks first: a half-done delete leaves metadata a retried
    copy finds already copied, never chunks nothing points to."""
    try:
        await _purge(bus, obj.bucket, results.chunk_subject(obj.bucket, obj.nuid))
        await _purge(bus, obj.bucket, results.meta_subject(obj.bucket, obj.name))
    except ShoalError as exc:  # the copy stands; the staging copy stays behind
        log.warning("deleting %s/%s after copying it: %s", obj.bucket, obj.name, exc)


class _PurgeReply(msgspec.Struct):
    success: bool = False
    error: dict[str, Any] | None = None


async def _purge(
    bus: Bus, bucket: str, subject: str, *, keep: int = 0, quiet: bool = False
) -> None:
    request: dict[str, Any] = {"filter": subject}
    if keep:
        request["keep"] = keep
    try:
        raw = await bus.request(f"$JS.API.STREAM.PURGE.OBJ_{bucket}", msgspec.json.encode(request))
        reply = msgspec.json.decode(raw, type=_PurgeReply)
        if not reply.success:
            raise ShoalError(f"purge {subject}: {reply.error}")
    except (ShoalError, msgspec.DecodeError) as exc:
        if not quiet:
            raise ShoalError(f"purge {subject}: {exc}") from None


@dataclass
class _Copy:
    task: asyncio.Task[StoredObject | None]
    done_at: float = 0.0

    def finished(self, task: asyncio.Task[StoredObject | None]) -> None:
        self.done_at = time.monotonic()
        if not task.cancelled():
            task.exception()  # retrieved: a failure is logged by _copy and retried on demand


def _failed_copy(task: asyncio.Task[StoredObject | None]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


class ResultsHandoff:
    """The copies the update applier asks for: at most COPIES_IN_FLIGHT at once, each run
    once however often its report is delivered, a failed one run again when asked again."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._slots = asyncio.Semaphore(COPIES_IN_FLIGHT)
        self._copies: dict[tuple[str, str], _Copy] = {}
        self._opened: set[str] = set()
        self._discarding: set[asyncio.Task[None]] = set()

    async def settle(
        self, record: wire.ExecutionRecord, update: wire.ExecutionUpdate
    ) -> wire.ExecutionUpdate:
        """The final report to apply once its archive is in the namespace's bucket.

        Raises CopyPending while the copy runs (after waiting up to QUICK seconds for it),
        and the copy's error if NATS failed it (the copy runs again when asked again). A
        report naming an object that is not this execution's, or whose object is gone or
        damaged (or cannot be copied for good), becomes a failed one saying so."""
        ref = update.result
        if ref is None or ref.publisher != "nats":
            return update
        name = results.archive_name(record.job_id, record.id)
        if ref.location != name:
            why = f"its results were reported as {ref.location!r}, not {name!r}: refused"
            return _failed(update, why)
        key = (record.namespace, name)
        copy = self._copies.get(key)
        if copy is None or _failed_copy(copy.task):
            self._forget_old()
            task = asyncio.get_running_loop().create_task(
                self._copy(record.node_id, record.namespace, name), name=f"copy {name}"
            )
            copy = self._copies[key] = _Copy(task)
            task.add_done_callback(copy.finished)
        try:
            async with asyncio.timeout(QUICK):
                stored = await asyncio.shield(copy.task)
        except TimeoutError:
            raise CopyPending(name) from None
        except ShoalError as exc:
            if exc.retryable:
                raise  # NATS trouble: the applier asks again shortly, and the copy runs again
            self._copies.pop(key, None)
            return _failed(update, f"copying its results {name} failed: {exc}")
        # Settled: asked again (a lost CAS, a second delivery before the record's write), the
        # copy finds the object already there and does nothing but look.
        self._copies.pop(key, None)
        if stored is None:
            where = results.node_bucket(record.node_id)
            why = f"its results {name} are not in {where} (lost before they were copied)"
            return _failed(update, why)
        return msgspec.structs.replace(
            update, result=wire.ResultRef(publisher="nats", location=name, size=stored.size)
        )

    def discard(self, record: wire.ExecutionRecord, update: wire.ExecutionUpdate) -> None:
        """Delete, in the background, what the node staged for an execution whose final
        report is not applied (it was stopped or replaced meanwhile, or is already final):
        nobody will copy it, and the node's bucket is only a staging area."""
        ref = update.result
        if ref is None or ref.publisher != "nats":
            return
        name = results.archive_name(record.job_id, record.id)
        task = asyncio.get_running_loop().create_task(self._discard(record.node_id, name))
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    async def _discard(self, node_id: str, name: str) -> None:
        async with self._slots:
            try:
                obj = await results.object_info(self._bus, results.node_bucket(node_id), name)
                if obj is not None:
                    await _delete(self._bus, obj)
            except ShoalError as exc:
                log.warning("deleting %s from node %s's bucket: %s", name, node_id, exc)

    async def _copy(self, node_id: str, namespace: str, name: str) -> StoredObject | None:
        async with self._slots:
            try:
                return await copy_result(self._bus, node_id, namespace, name, opened=self._opened)
            except ShoalError as exc:
                again = "will retry" if exc.retryable else "the execution fails"
                log.warning("copying %s from node %s: %s; %s", name, node_id, exc, again)
                raise

    def compact(self) -> None:
        """Rebuild the tables at the size of the copies under way now (after a burst)."""
        self._forget_old()
        shrink(self._copies, self._discarding)

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key, copy in list(self._copies.items()):
            if copy.done_at and now - copy.done_at > _KEEP_DONE:
                del self._copies[key]

    async def close(self) -> None:
        """Idempotent: cancel the copies and deletes under way (a copy's report stays in the
        updates stream unacked, and the next leader copies it again)."""
        tasks = [copy.task for copy in self._copies.values()] + list(self._discarding)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._copies.clear()


def _failed(update: wire.ExecutionUpdate, why: str) -> wire.ExecutionUpdate:
    error = f"{update.error}; {why}" if update.error else why
    return msgspec.structs.replace(update, state="failed", result=None, error=error, retryable=True)
