"""S3 access for the agent and the client: the one module importing boto3, wrapped for asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import re
import tarfile
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import wire
from shared.errors import ExecutionFailed, ShoalError, Unavailable

# Error codes S3 (and S3-compatible stores) answer with, by what they mean for a retry.
_MISSING = {"NoSuchBucket", "NoSuchKey", "NoSuchVersion", "NotFound", "404"}
_REFUSED = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "InvalidBucketName",
    "InvalidArgument",
    "InvalidRequest",
    "403",
    "400",
}


@dataclass(frozen=True, slots=True)
class S3Location:
    """A bucket and how to reach it (Region and Endpoint as the job spec gives them)."""

    bucket: str
    region: str = ""
    endpoint: str = ""

    def url(self, key: str) -> str:
        """`s3://bucket/key`, with `?region=&endpoint=` when set: a ResultRef's location."""
        query = urllib.parse.urlencode(
            {k: v for k, v in (("region", self.region), ("endpoint", self.endpoint)) if v}
        )
        path = urllib.parse.quote(key, safe="/")
        return f"s3://{self.bucket}/{path}" + (f"?{query}" if query else "")

    @classmethod
    def parse(cls, url: str) -> tuple[S3Location, str]:
        """The location and key of an `s3://` URL made by `url()`."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ShoalError(f"{url!r} is not an s3:// result location")
        query = dict(urllib.parse.parse_qsl(parts.query))
        loc = cls(parts.netloc, query.get("region", ""), query.get("endpoint", ""))
        return loc, urllib.parse.unquote(parts.path.removeprefix("/"))


@dataclass(frozen=True, slots=True)
class S3Object:
    key: str
    size: int


def _code_of(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    # boto3's S3UploadFailedError only keeps the message: "An error occurred (Code) when ..."
    found = re.search(r"An error occurred \((\w+)\)", str(exc))
    return found.group(1) if found else ""


@contextlib.contextmanager
def map_boto_errors(what: str) -> Iterator[None]:
    """Translate boto3/botocore errors raised inside into ShoalErrors that say what to do."""
    import boto3.exceptions
    import botocore.exceptions as bce

    try:
        yield
    except (bce.ClientError, boto3.exceptions.S3UploadFailedError) as exc:
        code = _code_of(exc)
        if code in _MISSING:
            raise ExecutionFailed(f"{what}: not found ({code}: {exc})", retryable=False) from None
        if code in _REFUSED:
            raise ExecutionFailed(f"{what}: refused ({code}: {exc})", retryable=False) from None
        # SlowDown, InternalError, ServiceUnavailable, RequestTimeout...: the store's bad moment
        raise ExecutionFailed(f"{what}: {exc}", retryable=True) from None
    except (bce.NoCredentialsError, bce.PartialCredentialsError) as exc:
        raise ExecutionFailed(
            f"{what}: no usable AWS credentials on this node ({exc}); set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
            retryable=False,
        ) from None
    except bce.ParamValidationError as exc:
        raise ExecutionFailed(f"{what}: {exc}", retryable=False) from None
    except (bce.ConnectionError, bce.HTTPClientError) as exc:
        raise Unavailable(f"{what}: cannot reach the S3 endpoint ({exc})") from None
    except (bce.BotoCoreError, boto3.exceptions.Boto3Error) as exc:  # e.g. retries exhausted
        raise ExecutionFailed(f"{what}: {exc}", retryable=True) from None


def _make_client(loc: S3Location, anonymous_fallback: bool) -> Any:
    import boto3.session
    import botocore
    import botocore.config

    # A Session per client: boto3's default session is not safe to share between threads.
    session = boto3.session.Session()
    options: dict[str, Any] = {
        "connect_timeout": 10,
        "read_timeout": 60,
        "retries": {"max_attempts": 4, "mode": "standard"},
    }
    if loc.endpoint:  # MinIO and most S3-compatible stores only serve path-style URLs
        options["s3"] = {"addressing_style": "path"}
    if anonymous_fallback and session.get_credentials() is None:
        options["signature_version"] = botocore.UNSIGNED  # public buckets, no credentials here
    return session.client(
        "s3",
        region_name=loc.region or None,
        endpoint_url=loc.endpoint or None,
        config=botocore.config.Config(**options),
    )


class S3:
    """One bucket's client; each call runs boto3 in a worker thread so the loop never blocks."""

    def __init__(self, loc: S3Location, *, anonymous_fallback: bool = False) -> None:
        self.loc = loc
        self._anonymous = anonymous_fallback
        self._client: Any = None

    def where(self, key: str) -> str:
        return f"s3://{self.loc.bucket}/{key}"

    async def client(self) -> Any:
        if self._client is None:
            with map_boto_errors(self.where("")):
                self._client = await asyncio.to_thread(_make_client, self.loc, self._anonymous)
        return self._client

    async def list(self, prefix: str) -> list[S3Object]:
        client = await self.client()

        def run() -> list[S3Object]:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.loc.bucket, Prefix=prefix
            )
            return [
                S3Object(o["Key"], int(o.get("Size", 0)))
                for page in pages
                for o in page.get("Contents", [])
            ]

        with map_boto_errors(self.where(prefix)):
            return await asyncio.to_thread(run)

    async def download(self, key: str, dest: Path, version_id: str = "") -> int:
        """Write one object to `dest` (through a temporary name); returns its size."""
        client = await self.client()
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.part")
        extra = {"VersionId": version_id} if version_id else None
        with map_boto_errors(self.where(key) + (f" (version {version_id})" if extra else "")):
            await asyncio.to_thread(
                client.download_file, self.loc.bucket, key, str(partial), ExtraArgs=extra
            )
        partial.replace(dest)
        return dest.stat().st_size

    async def upload(self, path: Path, key: str) -> None:
        client = await self.client()
        with map_boto_errors(self.where(key)):
            await asyncio.to_thread(client.upload_file, str(path), self.loc.bucket, key)


def relative_parts(key: str, base: str) -> list[str]:
    """The path under `base` an object is written to; refuses keys that would escape it."""
    parts = [p for p in key[len(base) :].split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ExecutionFailed(f"object key {key!r} is not a safe file path", retryable=False)
    return parts


async def fetch_result(ref: wire.ResultRef, archive: Path) -> None:
    """The client's fetcher: the tar.gz object, or a plain prefix packed back into one."""
    loc, key = S3Location.parse(ref.location)
    store = S3(loc, anonymous_fallback=True)
    if not key.endswith("/"):
        await store.download(key, archive)
        return
    objects = [o for o in await store.list(key) if not o.key.endswith("/")]
    if not objects:
        raise ExecutionFailed(f"{ref.location}: no result files found", retryable=False)
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        root = Path(tmp)
        for obj in objects:
            await store.download(obj.key, root.joinpath(*relative_parts(obj.key, key)))
        with tarfile.open(archive, "w:gz") as tar:
            for entry in sorted(root.iterdir()):
                tar.add(entry, arcname=entry.name)
