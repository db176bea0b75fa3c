"""A client for an IPFS node's HTTP RPC API (Kubo's): add files and folders, read them by CID."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from shared import wire
from shared.errors import ExecutionFailed, Unavailable

DEFAULT_API = "http://127.0.0.1:5001"
_CHUNK = 256 * 1024


def api_url() -> str:
    """The IPFS API endpoint: `SHOAL_IPFS_API`, else a local Kubo's default."""
    return (os.environ.get("SHOAL_IPFS_API") or DEFAULT_API).rstrip("/")


@dataclass(frozen=True, slots=True)
class Link:
    """One entry of a directory, as `ls` lists it."""

    name: str
    cid: str
    is_dir: bool
    size: int


def _safe_name(name: str, cid: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ExecutionFailed(f"ipfs {cid}: entry name {name!r} is not a safe file name")
    return name


class IPFSClient:
    """`async with IPFSClient() as ipfs:`; every call is a POST, as Kubo's RPC API requires."""

    def __init__(self, api: str | None = None, *, timeout: float = 300.0) -> None:
        self.api = (api or api_url()).rstrip("/")
        # A stall of `timeout` seconds between bytes fails; a big but moving transfer does not.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> IPFSClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @contextlib.asynccontextmanager
    async def _call(self, command: str, arg: str = "", *, data: Any = None, **params: str) -> Any:
        if self._session is None:
            raise RuntimeError("use IPFSClient inside `async with`")
        query = {**({"arg": arg} if arg else {}), **params}
        what = f"ipfs {command} {arg}".rstrip()
        try:
            async with self._session.post(
                f"{self.api}/api/v0/{command}", params=query, data=data
            ) as resp:
                if resp.status != 200:
                    raise _api_error(what, resp.status, await resp.text())
                yield resp
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise Unavailable(f"{what}: cannot reach the IPFS API at {self.api} ({exc})") from None
        except TimeoutError:
            raise Unavailable(f"{what}: the IPFS API at {self.api} timed out") from None

    async def _json(self, command: str, arg: str = "", **params: str) -> Any:
        async with self._call(command, arg, **params) as resp:
            return json.loads(await resp.read())

    async def version(self) -> str:
        return str((await self._json("version")).get("Version", ""))

    async def add(self, path: Path) -> str:
        """Add a file or a folder (recursively, named as `path` is); returns the root CID."""
        with contextlib.ExitStack() as files:
            writer = aiohttp.MultipartWriter("form-data")
            entries = [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]
            for entry in entries:
                name = "/".join((path.name, *entry.relative_to(path).parts))
                if entry.is_dir():
                    part = writer.append(b"", {"Content-Type": "application/x-directory"})
                elif entry.is_file():
                    part = writer.append(files.enter_context(entry.open("rb")))
                    part.headers["Content-Type"] = "application/octet-stream"
                else:
                    continue  # sockets, fifos and dangling links have no content to add
                # Kubo reads each part's path from its (percent-encoded) filename
                part.set_content_disposition("form-data", name="file", filename=name)
            async with self._call(
                "add", data=writer, pin="true", progress="false", **{"cid-version": "1"}
            ) as resp:
                lines = [json.loads(line) for line in (await resp.read()).splitlines() if line]
        if not lines:
            raise ExecutionFailed(f"ipfs add {path.name}: the node returned no CID")
        return str(lines[-1]["Hash"])  # the root comes last, after everything inside it

    async def cat(self, cid: str, dest: Path) -> int:
        """Stream the file `cid` into `dest` (through a temporary name); returns its size."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.part")
        size = 0
        async with self._call("cat", cid) as resp:
            with partial.open("wb") as out:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
        partial.replace(dest)
        return size

    async def is_dir(self, cid: str) -> bool:
        stat = await self._json("files/stat", f"/ipfs/{cid}")
        return bool(stat.get("Type") == "directory")

    async def ls(self, cid: str) -> list[Link]:
        reply = await self._json("ls", cid)
        return [
            Link(str(x["Name"]), str(x["Hash"]), int(x.get("Type", 2)) == 1, int(x.get("Size", 0)))
            for obj in reply.get("Objects", [])
            for x in obj.get("Links") or []
        ]

    async def get(self, cid: str, dest: Path) -> None:
        """Write `cid` at `dest`: a file, or a folder with everything under it."""
        if not await self.is_dir(cid):
            await self.cat(cid, dest)
            return
        dest.mkdir(parents=True, exist_ok=True)
        for link in await self.ls(cid):
            target = dest / _safe_name(link.name, cid)
            if link.is_dir:
                await self.get(link.cid, target)
            else:
                await self.cat(link.cid, target)


def _api_error(what: str, status: int, body: str) -> ExecutionFailed:
    try:
        message = str(json.loads(body).get("Message", "")) or body
    except (ValueError, AttributeError):
        message = body.strip() or f"HTTP {status}"
    # Kubo answers 500 for content it cannot resolve or parse: another try will not help.
    return ExecutionFailed(f"{what}: {message}", retryable=status >= 502)


_PROBED: dict[str, tuple[float, bool]] = {}


async def probe(api: str | None = None, timeout: float = 2.0, *, max_age: float = 10.0) -> bool:
    """Whether an IPFS API answers at `api` (default: `api_url()`).

    Remembered for `max_age` seconds, so a process hosting many virtual nodes asks once.
    """
    api = (api or api_url()).rstrip("/")
    seen = _PROBED.get(api)
    if seen is not None and time.monotonic() - seen[0] < max_age:
        return seen[1]
    client = IPFSClient(api, timeout=timeout)
    try:
        async with client:
            ok = bool(await client.version())
    except (ExecutionFailed, Unavailable, aiohttp.ClientError, ValueError, AttributeError):
        ok = False
    _PROBED[api] = (time.monotonic(), ok)
    return ok


async def fetch_result(ref: wire.ResultRef, archive: Path) -> None:
    """The client's fetcher: the result archive the IPFS publisher added, by its CID."""
    async with IPFSClient() as ipfs:
        await ipfs.cat(ref.location, archive)
