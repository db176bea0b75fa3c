"""Fetchers for remote input sources (urlDownload, s3, ipfs): bytes into the execution's workdir."""

from __future__ import annotations

import asyncio
import logging
import posixpath
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from shared.errors import ExecutionFailed, ShoalError
from shared.ipfs import IPFSClient
from shared.s3 import S3, S3Location, S3Object, relative_parts
from shared.spec.params import IPFSSource, S3Source, URLSource

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class UrlLimits:
    """How long and how much one URL input may take, and how often to try it."""

    timeout: float = 600.0  # one attempt, start to finish
    connect_timeout: float = 15.0
    read_timeout: float = 60.0  # the longest silence between two chunks
    max_bytes: int = 10 * 1024**3
    attempts: int = 3
    backoff: float = 1.0  # seconds before the 2nd attempt, doubling after
    max_retry_after: float = 30.0  # the most of a server's Retry-After we honour


class _TryAgain(Exception):
    """A failure that another attempt may not hit (a 503, a reset, a timeout)."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


def _file_name(response: aiohttp.ClientResponse, url: str) -> str:
    """Content-Disposition's filename, else the URL path's last segment (as Bacalhau does)."""
    name = ""
    disposition = response.content_disposition
    if disposition is not None and disposition.filename:
        name = disposition.filename
    if not name:
        name = urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(url).path))
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name if name not in ("", ".", "..") else "download"


async def fetch_url(params: URLSource, dest_dir: Path, limits: UrlLimits | None = None) -> Path:
    """Download `params.url` into `dest_dir`; returns the file's path."""
    limits = limits or UrlLimits()
    url = params.url
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ExecutionFailed(f"url input {url}: only http and https URLs", retryable=False)
    timeout = aiohttp.ClientTimeout(
        total=limits.timeout, connect=limits.connect_timeout, sock_read=limits.read_timeout
    )
    last = ""
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for attempt in range(1, limits.attempts + 1):
            try:
                return await _download_once(session, url, dest_dir, limits)
            except _TryAgain as exc:
                last = str(exc)
                if attempt == limits.attempts:
                    break
                delay = limits.backoff * 2 ** (attempt - 1)
                if exc.delay is not None:
                    delay = max(delay, min(exc.delay, limits.max_retry_after))
                log.info("url input %s: %s; attempt %d in %.1fs", url, last, attempt + 1, delay)
                await asyncio.sleep(delay)
    raise ExecutionFailed(
        f"url input {url}: {last} (gave up after {limits.attempts} attempts)", retryable=True
    )


async def _download_once(
    session: aiohttp.ClientSession, url: str, dest_dir: Path, limits: UrlLimits
) -> Path:
    partial: Path | None = None
    try:
        async with session.get(url) as resp:
            if resp.status in _RETRY_STATUS:
                raise _TryAgain(f"HTTP {resp.status} {resp.reason}", _retry_after(resp))
            if resp.status >= 400:
                raise ExecutionFailed(
                    f"url input {url}: HTTP {resp.status} {resp.reason}", retryable=False
                )
            if resp.content_length is not None and resp.content_length > limits.max_bytes:
                raise _too_big(url, limits, f"it is {resp.content_length} bytes")
            dest_dir.mkdir(parents=True, exist_ok=True)
            dest = dest_dir / _file_name(resp, url)
            partial = dest.with_name(f".{dest.name}.part")
            size = 0
            with partial.open("wb") as out:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > limits.max_bytes:
                        raise _too_big(url, limits, "the download went past it")
                    out.write(chunk)
            partial.replace(dest)
            partial = None
            return dest
    except TimeoutError:  # before ClientConnectionError: aiohttp's read timeout is both
        raise _TryAgain(
            f"timed out ({limits.read_timeout:g}s without data or {limits.timeout:g}s in all)"
        ) from None
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise _TryAgain(f"{type(exc).__name__}: {exc}") from None
    except aiohttp.ClientError as exc:  # a bad URL, too many redirects: the same next time
        raise ExecutionFailed(f"url input {url}: {exc}", retryable=False) from None
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    try:
        return float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None  # absent, or an HTTP date: use our own backoff


def _too_big(url: str, limits: UrlLimits, detail: str) -> ExecutionFailed:
    return ExecutionFailed(
        f"url input {url}: larger than this node's limit of {limits.max_bytes} bytes ({detail})",
        retryable=False,
    )


def s3_plan(params: S3Source) -> tuple[str, str] | None:
    """(prefix, base) for a prefix/wildcard/filter source, or None for one object.

    Objects land at their key relative to `base`, the prefix up to its last "/".
    """
    key = params.key
    if key and not key.endswith(("/", "*")) and not params.filter:
        return None
    prefix = key.removesuffix("*")
    return prefix, prefix[: prefix.rfind("/") + 1]


async def fetch_s3(params: S3Source, dest_dir: Path, *, parallel: int = 4) -> list[Path]:
    """Download an object, or every object under a prefix, into `dest_dir`."""
    store = S3(S3Location(params.bucket, params.region, params.endpoint), anonymous_fallback=True)
    plan = s3_plan(params)
    if plan is None:
        name = relative_parts(params.key, params.key[: params.key.rfind("/") + 1])[-1]
        try:
            await store.download(params.key, dest_dir / name, params.version_id)
            return [dest_dir / name]
        except ExecutionFailed as exc:
            # "dir" without its trailing slash names a folder, as `aws s3 cp --recursive` allows
            if exc.retryable or params.version_id or not await store.list(params.key + "/"):
                raise
            plan = (params.key + "/", params.key + "/")
    if params.version_id:
        raise ExecutionFailed(
            "s3 input: VersionID applies to a single object, not a prefix or filter",
            retryable=False,
        )
    prefix, base = plan
    try:
        pattern = re.compile(params.filter) if params.filter else None
    except re.error as exc:
        raise ExecutionFailed(
            f"s3 input Filter {params.filter!r}: {exc}", retryable=False
        ) from None
    chosen: list[S3Object] = [
        obj
        for obj in await store.list(prefix)
        if not obj.key.endswith("/")  # folder markers made by consoles
        and (pattern is None or pattern.search(obj.key[len(prefix) :]))
    ]
    if not chosen:
        what = f" matching {params.filter!r}" if pattern else ""
        raise ExecutionFailed(f"s3://{params.bucket}/{prefix}: no objects{what}", retryable=False)
    slots = asyncio.Semaphore(parallel)

    async def one(obj: S3Object) -> Path:
        path = dest_dir.joinpath(*relative_parts(obj.key, base))
        async with slots:
            await store.download(obj.key, path)
        return path

    # Let every started download finish before reporting, so none writes into a removed workdir
    done = await asyncio.gather(*(one(o) for o in chosen), return_exceptions=True)
    for result in done:
        if isinstance(result, BaseException):
            raise result
    return [r for r in done if isinstance(r, Path)]


async def fetch_ipfs(params: IPFSSource, dest: Path) -> Path:
    """Write the CID at `dest`: a file for a file CID, a folder for a directory CID."""
    try:
        async with IPFSClient() as ipfs:
            await ipfs.get(params.cid, dest)
    except ExecutionFailed:
        raise
    except ShoalError as exc:  # the node is down or slow: another attempt may do
        raise ExecutionFailed(f"ipfs input {params.cid}: {exc}", retryable=True) from None
    return dest
