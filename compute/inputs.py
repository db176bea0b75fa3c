"""Input sources: fetch or map each one to a Mount before the task starts."""

from __future__ import annotations

import base64
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from compute import fetch, metrics
from compute.engines.base import Mount
from shared.errors import ExecutionFailed
from shared.spec import InputSource
from shared.spec.params import (
    InlineSource,
    IPFSSource,
    LocalDirectorySource,
    S3Source,
    URLSource,
)

# "ipfs" only where an IPFS API answers: the agent adds it after probing (ComputeAgent.start)
SUPPORTED_SOURCES = ("inline", "localDirectory", "urlDownload", "s3", "ipfs")


@dataclass(frozen=True, slots=True)
class AllowedPath:
    """A host directory tasks may mount (`--allow-local-path DIR[:rw]`)."""

    path: Path
    writable: bool = False

    @classmethod
    def parse(cls, text: str) -> AllowedPath:
        path, _, mode = text.rpartition(":") if text.endswith((":rw", ":ro")) else (text, "", "")
        return cls(Path(path).resolve(), mode == "rw")


def decode_data_url(url: str) -> bytes:
    """RFC 2397: `data:[<mediatype>][;base64],<data>`."""
    if not url.startswith("data:") or "," not in url:
        raise ExecutionFailed("inline source: not a data: URL", retryable=False)
    header, _, payload = url[5:].partition(",")
    try:
        if header.endswith(";base64"):
            return base64.b64decode("".join(payload.split()), validate=True)
        return urllib.parse.unquote_to_bytes(payload)
    except ValueError as exc:
        raise ExecutionFailed(f"inline source: bad data URL ({exc})", retryable=False) from None


def local_mount(
    params: LocalDirectorySource, target: str, allowed: tuple[AllowedPath, ...]
) -> Mount:
    """Mount a host path only if it resolves (symlinks and `..` included) under an allowed dir."""
    real = Path(os.path.realpath(params.source_path))
    for root in allowed:
        if real == root.path or root.path in real.parents:
            if params.read_write and not root.writable:
                raise ExecutionFailed(
                    f"local path {params.source_path} is allowed read-only on "
                    "this node, but the job asks ReadWrite",
                    retryable=False,
                )
            if not real.exists():
                raise ExecutionFailed(
                    f"local path {params.source_path} does not exist on this node", retryable=False
                )
            return Mount(real, target, read_only=not params.read_write)
    roots = ", ".join(str(r.path) for r in allowed) or "none"
    raise ExecutionFailed(
        f"local path {params.source_path} is not under an allowed directory "
        f"(allowed: {roots}; start the agent with --allow-local-path)",
        retryable=False,
    )


def check_local(source: InputSource, allowed: tuple[AllowedPath, ...]) -> str | None:
    """Bid-time policy check: why this node will not mount the source, or None."""
    if source.source.type != "localDirectory":
        return None
    try:
        local_mount(
            LocalDirectorySource.model_validate(source.source.params), source.target, allowed
        )
    except ExecutionFailed as exc:
        return str(exc)
    return None


async def prepare(
    sources: list[InputSource], workdir: Path, allowed: tuple[AllowedPath, ...]
) -> list[Mount]:
    mounts = []
    for i, src in enumerate(sources):
        with metrics.timed(metrics.INPUT_FETCH, _label(src.source.type)):
            mounts.append(await _prepare_one(i, src, workdir, allowed))
    return mounts


def _label(kind: str) -> str:
    """The source type as a metric label: one of a fixed set, whatever the spec said."""
    return kind if kind in SUPPORTED_SOURCES else "other"


async def _prepare_one(
    i: int, src: InputSource, workdir: Path, allowed: tuple[AllowedPath, ...]
) -> Mount:
    kind = src.source.type
    if kind == "inline":
        params = InlineSource.model_validate(src.source.params)
        dest = workdir / "inputs" / str(i) / (Path(src.target).name or "data")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(decode_data_url(params.url))
        return Mount(dest, src.target, read_only=True)
    if kind == "localDirectory":
        params_l = LocalDirectorySource.model_validate(src.source.params)
        return local_mount(params_l, src.target, allowed)
    if kind in ("urlDownload", "s3"):  # a folder at Target holding the file(s)
        folder = workdir / "inputs" / str(i)
        if kind == "s3":
            await fetch.fetch_s3(S3Source.model_validate(src.source.params), folder)
        else:
            await fetch.fetch_url(URLSource.model_validate(src.source.params), folder)
        return Mount(folder, src.target, read_only=True)
    if kind == "ipfs":  # a file CID is a file at Target, a directory CID a folder
        dest = workdir / "inputs" / str(i) / (Path(src.target).name or "data")
        await fetch.fetch_ipfs(IPFSSource.model_validate(src.source.params), dest)
        return Mount(dest, src.target, read_only=True)
    raise ExecutionFailed(
        f"input source type {kind!r} is not supported on this node", retryable=False
    )
