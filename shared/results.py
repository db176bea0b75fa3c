"""Result archives: their format (one tar.gz per execution) and the object store buckets they
are kept in (a node's staging bucket, then its job's namespace's bucket).

Layout inside: `stdout`, `stderr`, `exitCode`, and one folder per ResultPaths name.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from shared.bus import Bus
from shared.errors import InvalidSpec, NotFound, ShoalError, Unavailable

ARCHIVE = "results.tar.gz"


def pack(workdir: Path, names: list[str], exit_code: int | None) -> Path:
    """Write `workdir/results.tar.gz` from the task's output files and result folders.

    The exit code, and the output a task did not write, go in from memory: made as files only
    to be archived, they cost a busy node more than the archive did."""
    archive = workdir / ARCHIVE
    now = time.time()
    # gzip's own default level: 9 costs several times the CPU on large output for a few %.
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        for name in ("stdout", "stderr"):
            try:
                tar.add(workdir / name, arcname=name)
            except FileNotFoundError:  # a task that printed nothing still has (empty) output
                _add_bytes(tar, name, b"", now)
        code = b"" if exit_code is None else f"{exit_code}\n".encode()
        _add_bytes(tar, "exitCode", code, now)
        for name in names:
            folder = workdir / "outputs" / name
            if folder.exists():
                tar.add(folder, arcname=name)
    return archive


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    tar.addfile(info, io.BytesIO(data))


def unpack(archive: Path, dest: Path) -> list[Path]:
    """Extract safely (no absolute paths, no `..`, no links out); returns the top entries."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(dest, filter="data")
            return sorted({dest / m.name.split("/")[0] for m in tar.getmembers()})
    except (tarfile.TarError, OSError) as exc:
        raise InvalidSpec(f"result archive {archive.name} is damaged: {exc}") from None


# ---- Where archives are stored: a staging bucket per node, a bucket per namespace ------------
#
# A node puts its execution's archive into its own bucket (the only one its credentials may
# write); the orchestrator, applying the execution's final report, copies it into the
# namespace's bucket, which the namespace's users read (orchestrator/results_handoff.py).
# Objects are read here with plain JetStream API requests (STREAM.MSG.GET, one chunk at a
# time): memory stays at one chunk whatever the archive's size, and a reader needs no
# consumer, only `$JS.API.STREAM.MSG.GET.OBJ_<bucket>`.

NODE_BUCKET_PREFIX = "shoal-results-node-"
NAMESPACE_BUCKET_PREFIX = "shoal-results-ns-"
LEGACY_BUCKET = "shoal-results"  # shared by every node before issue 20; read, never written
_BUCKET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
_NO_MESSAGE = (10037, 10059)  # JSNoMessageFoundErr, JSStreamNotFoundErr


def node_bucket(node_id: str) -> str:
    """The object store bucket node `node_id` writes its archives to."""
    return NODE_BUCKET_PREFIX + _bucket_token(node_id, "node id")


def namespace_bucket(namespace: str) -> str:
    """The object store bucket the users of `namespace` read their jobs' archives from."""
    return NAMESPACE_BUCKET_PREFIX + _bucket_token(namespace, "namespace")


def archive_name(job_id: str, execution_id: str) -> str:
    """The object name of an execution's archive (the same in every bucket)."""
    return f"{job_id}/{execution_id}/{ARCHIVE}"


def _bucket_token(value: str, what: str) -> str:
    if not _BUCKET_TOKEN.fullmatch(value):
        raise InvalidSpec(f"{what} {value!r} cannot name a results bucket")
    return value


def meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def chunk_subject(bucket: str, nuid: str) -> str:
    return f"$O.{bucket}.C.{nuid}"


class StoredObject(msgspec.Struct, frozen=True):
    """An object's metadata as object stores keep it (`raw`: the JSON, unknown fields too)."""

    bucket: str
    name: str
    nuid: str
    size: int
    chunks: int
    digest: str
    raw: bytes


class _Meta(msgspec.Struct):
    name: str = ""
    nuid: str = ""
    size: int = 0
    chunks: int = 0
    digest: str = ""
    deleted: bool = False


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Message(msgspec.Struct):
    seq: int = 0
    data: bytes = b""  # base64 in the JSON


class _GetReply(msgspec.Struct):
    message: _Message | None = None
    error: _ApiError | None = None


_decode_get = msgspec.json.Decoder(_GetReply).decode
_decode_meta = msgspec.json.Decoder(_Meta).decode


async def _message(bus: Bus, bucket: str, query: dict[str, object]) -> _Message | None:
    """One stored message of the bucket's stream; None if there is none (or no stream)."""
    what = f"read {bucket}"
    raw = await bus.request(f"$JS.API.STREAM.MSG.GET.OBJ_{bucket}", msgspec.json.encode(query))
    try:
        reply = _decode_get(raw)
    except msgspec.DecodeError as exc:
        raise ShoalError(f"{what}: unreadable answer {raw[:200]!r}") from exc
    if reply.error is not None:
        if reply.error.err_code in _NO_MESSAGE:
            return None
        if reply.error.code == 503:
            raise Unavailable(f"{what}: JetStream is not available ({reply.error.description})")
        raise ShoalError(f"{what}: {reply.error.description or reply.error.code}")
    return reply.message


async def object_info(bus: Bus, bucket: str, name: str) -> StoredObject | None:
    """The object's metadata; None if the bucket has no such object (or no bucket exists)."""
    msg = await _message(bus, bucket, {"last_by_subj": meta_subject(bucket, name)})
    if msg is None or not msg.data:
        return None
    try:
        meta = _decode_meta(msg.data)
    except msgspec.DecodeError as exc:
        raise ShoalError(f"{bucket}/{name}: unreadable object metadata") from exc
    if meta.deleted:
        return None
    return StoredObject(bucket, name, meta.nuid, meta.size, meta.chunks, meta.digest, msg.data)


async def object_chunks(bus: Bus, obj: StoredObject) -> AsyncIterator[bytes]:
    """The object's chunks in order, one request each; checks size and digest at the end."""
    subject = chunk_subject(obj.bucket, obj.nuid)
    digest = hashlib.sha256()
    seq = size = 0
    for _ in range(obj.chunks):
        msg = await _message(bus, obj.bucket, {"seq": seq + 1, "next_by_subj": subject})
        if msg is None:
            raise NotFound(f"{obj.bucket}/{obj.name} lost a chunk while it was read")
        seq = msg.seq
        size += len(msg.data)
        digest.update(msg.data)
        yield msg.data
    if size != obj.size or digest_of(digest.digest()) != obj.digest:
        raise ShoalError(f"{obj.bucket}/{obj.name} is damaged: size or digest does not match")


def digest_of(sha256: bytes) -> str:
    """An object store's digest notation: `SHA-256=<url-safe base64>`."""
    return "SHA-256=" + base64.urlsafe_b64encode(sha256).decode()


async def fetch_result(bus: Bus, namespace: str, name: str, dest: Path) -> int:
    """Download the archive `name` of a job in `namespace` into the file `dest`; its size.

    NotFound if the namespace's bucket does not hold it."""
    bucket = namespace_bucket(namespace)
    obj = await object_info(bus, bucket, name)
    if obj is None:
        raise NotFound(f"{bucket}/{name} does not exist")
    with dest.open("wb") as out:
        async for chunk in object_chunks(bus, obj):
            out.write(chunk)
    return obj.size
