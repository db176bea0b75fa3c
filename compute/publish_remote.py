"""Publishers outside NATS: S3 (a tar.gz object or plain files under a prefix) and IPFS (a CID)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from shared import wire
from shared.ipfs import IPFSClient
from shared.results import unpack
from shared.s3 import S3, S3Location
from shared.spec import JobSpec
from shared.spec.params import S3Publisher as S3Params


def render_key(key: str, order: wire.ExecutionOrder, node_id: str, now: datetime) -> str:
    """Fill Bacalhau's key placeholders: {jobID} {executionID} {nodeID} {date} {time} (UTC)."""
    values = {
        "{jobID}": order.job_id,
        "{executionID}": order.execution_id,
        "{nodeID}": node_id,
        "{date}": now.strftime("%Y%m%d"),
        "{time}": now.strftime("%H%M%S"),
    }
    for placeholder, value in values.items():
        key = key.replace(placeholder, value)
    return key.lstrip("/")  # "/results/x" is meant as "results/x", not a key starting with "/"


def object_key(params: S3Params, order: wire.ExecutionOrder, node_id: str, now: datetime) -> str:
    """The object key (gzip) or key prefix ending in "/" (plain) this execution publishes to."""
    key = render_key(params.key, order, node_id, now)
    if params.encoding.lower() == "plain":
        key = key or f"{order.job_id}/{order.execution_id}"
        return key if key.endswith("/") else key + "/"
    if not key or key.endswith("/"):  # a folder: one archive per execution inside it
        key += f"{order.execution_id}.tar.gz"
    return key


class S3Publisher:
    """Uploads with this node's AWS credentials (environment, profile or instance role)."""

    name = "s3"

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    async def publish(
        self, archive: Path, order: wire.ExecutionOrder, spec: JobSpec
    ) -> wire.ResultRef:
        params = S3Params.model_validate(spec.task.publisher.params)
        loc = S3Location(params.bucket, params.region, params.endpoint)
        store = S3(loc)
        key = object_key(params, order, self.node_id, datetime.now(UTC))
        if not key.endswith("/"):
            await store.upload(archive, key)
            return wire.ResultRef(
                publisher="s3", location=loc.url(key), size=archive.stat().st_size
            )
        size = 0
        with tempfile.TemporaryDirectory(dir=archive.parent, prefix=".plain-") as tmp:
            root = Path(tmp)
            unpack(archive, root)
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                await store.upload(path, key + path.relative_to(root).as_posix())
                size += path.stat().st_size
        return wire.ResultRef(publisher="s3", location=loc.url(key), size=size)


class IPFSPublisher:
    """Adds the result archive to the node's IPFS daemon; the ResultRef holds its CID."""

    name = "ipfs"

    def __init__(self, api: str) -> None:
        self.api = api

    async def publish(
        self, archive: Path, order: wire.ExecutionOrder, spec: JobSpec
    ) -> wire.ResultRef:
        async with IPFSClient(self.api) as ipfs:
            cid = await ipfs.add(archive)  # one file, not wrapped: the CID is the tar.gz itself
        return wire.ResultRef(publisher="ipfs", location=cid, size=archive.stat().st_size)
