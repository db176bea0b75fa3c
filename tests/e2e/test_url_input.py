"""urlDownload inputs against a real local HTTP server: names, retries, timeouts, size caps."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from compute.fetch import UrlLimits, fetch_url
from shared.errors import ExecutionFailed
from shared.natsserver import EmbeddedNats
from shared.spec.params import URLSource
from tests.e2e.helpers_data import cat_job, source
from tests.integration.stack import stack

FAST = UrlLimits(timeout=5, connect_timeout=2, read_timeout=2, attempts=3, backoff=0.01)


class Site:
    """A local web server whose routes misbehave in the ways the fetcher must handle."""

    def __init__(self) -> None:
        self.url = ""
        self.hits: Counter[str] = Counter()
        self.app = web.Application()
        self.app.router.add_get("/", self.file)
        self.app.router.add_get("/files/{name}", self.file)
        self.app.router.add_get("/report", self.disposition)
        self.app.router.add_get("/flaky/{fails}", self.flaky)
        self.app.router.add_get("/status/{code}", self.status)
        self.app.router.add_get("/slow", self.slow)
        self.app.router.add_get("/big", self.big)
        self.app.router.add_get("/big-chunked", self.big_chunked)
        self.app.router.add_get("/moved", self.moved)

    async def file(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "the root")
        return web.Response(body=f"contents of {name}\n".encode())

    async def disposition(self, request: web.Request) -> web.Response:
        headers = {"Content-Disposition": 'attachment; filename="report.csv"'}
        return web.Response(body=b"a,b\n1,2\n", headers=headers)

    async def flaky(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        if self.hits[request.path] <= int(request.match_info["fails"]):
            return web.Response(status=503, headers={"Retry-After": "0"})
        return web.Response(body=b"finally\n")

    async def status(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def slow(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"start")
        await asyncio.sleep(30)  # longer than any read timeout the tests set
        return response

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)

    async def big_chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length: the cap must count bytes
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(10):
            await response.write(b"y" * 500)
        await response.write_eof()
        return response

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/files/target.txt")


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    s = Site()
    runner = web.AppRunner(s.app, shutdown_timeout=0.1)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    s.url = f"http://127.0.0.1:{port}"
    try:
        yield s
    finally:
        await runner.cleanup()


def url(u: str) -> URLSource:
    return URLSource.model_validate({"URL": u})


async def test_file_named_from_url_header_or_redirect(site: Site, tmp_path: Path) -> None:
    got = await fetch_url(url(f"{site.url}/files/data%20set.txt?x=1"), tmp_path / "a", FAST)
    assert got == tmp_path / "a" / "data set.txt"
    assert got.read_text() == "contents of data set.txt\n"
    got = await fetch_url(url(f"{site.url}/report"), tmp_path / "b", FAST)
    assert got.name == "report.csv" and got.read_bytes() == b"a,b\n1,2\n"
    got = await fetch_url(url(f"{site.url}/moved"), tmp_path / "c", FAST)
    assert got.read_text() == "contents of target.txt\n"
    got = await fetch_url(url(f"{site.url}/"), tmp_path / "d", FAST)  # no name anywhere
    assert got.name == "download"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["data set.txt"]  # no .part left


@pytest.mark.parametrize("code", [404, 403, 410])
async def test_client_errors_are_final_and_not_retried(
    site: Site, tmp_path: Path, code: int
) -> None:
    with pytest.raises(ExecutionFailed, match=f"HTTP {code}") as err:
        await fetch_url(url(f"{site.url}/status/{code}"), tmp_path, FAST)
    assert not err.value.retryable
    assert site.hits[f"/status/{code}"] == 1


async def test_503_is_retried_then_succeeds(site: Site, tmp_path: Path) -> None:
    got = await fetch_url(url(f"{site.url}/flaky/2"), tmp_path, FAST)
    assert got.read_text() == "finally\n"
    assert site.hits["/flaky/2"] == 3


async def test_persistent_503_gives_up_retryable(site: Site, tmp_path: Path) -> None:
    with pytest.raises(ExecutionFailed, match=r"HTTP 503.*after 3 attempts") as err:
        await fetch_url(url(f"{site.url}/status/503"), tmp_path, FAST)
    assert err.value.retryable  # the server may be back for the next attempt of the job
    assert site.hits["/status/503"] == 3


async def test_stalled_download_times_out(site: Site, tmp_path: Path) -> None:
    limits = UrlLimits(timeout=5, read_timeout=0.3, attempts=2, backoff=0.01)
    with pytest.raises(ExecutionFailed, match="timed out") as err:
        await fetch_url(url(f"{site.url}/slow"), tmp_path, limits)
    assert err.value.retryable
    assert site.hits["/slow"] == 2
    assert not list(tmp_path.iterdir())  # the partial file is gone


async def test_size_cap_by_header_and_by_counting(site: Site, tmp_path: Path) -> None:
    limits = UrlLimits(max_bytes=1000, backoff=0.01)
    for path in ("/big", "/big-chunked"):
        with pytest.raises(ExecutionFailed, match="limit of 1000 bytes") as err:
            await fetch_url(url(site.url + path), tmp_path, limits)
        assert not err.value.retryable
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    got = await fetch_url(url(f"{site.url}/big"), tmp_path, UrlLimits(max_bytes=5000))
    assert got.stat().st_size == 5000


async def test_bad_scheme_and_refused_connection(tmp_path: Path) -> None:
    with pytest.raises(ExecutionFailed, match="only http and https") as err:
        await fetch_url(url("ftp://127.0.0.1/file"), tmp_path, FAST)
    assert not err.value.retryable
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ExecutionFailed, match="after 3 attempts") as err:
        await fetch_url(url(f"http://127.0.0.1:{port}/x"), tmp_path, FAST)
    assert err.value.retryable


async def test_wasm_job_reads_a_downloaded_file(
    nats_server: EmbeddedNats, site: Site, tmp_path: Path
) -> None:
    ok = cat_job(
        "/inputs/hello.txt",
        [source("urlDownload", "/inputs", URL=f"{site.url}/files/hello.txt")],
        name="url-ok",
    )
    missing = cat_job(
        "/inputs/x", [source("url", "/inputs", URL=f"{site.url}/status/404")], name="url-404"
    )
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        job_id = await client.submit(ok)
        view = await client.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        out = b"".join([x.data async for x in client.logs(job_id) if x.stream == "stdout"])
        assert out == b"contents of hello.txt\n"

        view = await client.wait(await client.submit(missing), timeout=60)
        assert view.state == "Failed", view
        assert len(view.executions) == 1
        assert "HTTP 404" in view.executions[0].error
