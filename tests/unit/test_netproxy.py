"""The allow-list proxy behind network type HTTP, on loopback: matching, forwarding, refusing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from compute.netproxy import DomainProxy, domain_allowed


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("example.com", True),
        ("EXAMPLE.com.", True),
        ("api.example.com", True),
        ("a.b.example.com", True),
        ("notexample.com", False),
        ("example.com.evil", False),
        ("example.org", False),
    ],
)
@pytest.mark.parametrize("domain", ["example.com", ".example.com", "*.example.com", "Example.COM"])
def test_domain_matching(domain: str, host: str, allowed: bool) -> None:
    assert domain_allowed(host, [domain]) is allowed


def test_empty_domains_allow_nothing() -> None:
    assert not domain_allowed("example.com", [])
    assert not domain_allowed("example.com", ["", "."])


@pytest.fixture
async def origin() -> AsyncIterator[int]:
    """An HTTP/1.0 server answering `you asked <path> as <host header>`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        path = head.split(" ")[1]
        host = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("host:")
        )
        proxy_headers = [h for h in head.split("\r\n") if h.lower().startswith("proxy-")]
        body = f"you asked {path} as {host} {proxy_headers}\n".encode()
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def proxy() -> AsyncIterator[DomainProxy]:
    p = DomainProxy(["allowed.test", "localhost"], resolve={"allowed.test": "127.0.0.1"})
    await p.start()
    p.allow_clients(None)
    try:
        yield p
    finally:
        await p.close()


async def exchange(proxy: DomainProxy, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_plain_http_to_an_allowed_domain(proxy: DomainProxy, origin: int) -> None:
    reply = await exchange(
        proxy,
        f"GET http://allowed.test:{origin}/x?y=1 HTTP/1.1\r\nHost: allowed.test:{origin}\r\n"
        "Proxy-Authorization: Basic Zm9v\r\nProxy-Connection: keep-alive\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.0 200 OK")
    assert reply.endswith(f"you asked /x?y=1 as allowed.test:{origin} []\n".encode())


async def test_connect_tunnel_to_an_allowed_domain(proxy: DomainProxy, origin: int) -> None:
    reply = await exchange(
        proxy,
        f"CONNECT allowed.test:{origin} HTTP/1.1\r\n\r\n"
        "GET /tunnel HTTP/1.0\r\nHost: inner\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.0 200 OK")
    assert reply.endswith(b"you asked /tunnel as inner []\n")


@pytest.mark.parametrize(
    "request_head",
    [
        "GET http://blocked.test/ HTTP/1.1\r\nHost: blocked.test\r\n\r\n",
        "CONNECT blocked.test:443 HTTP/1.1\r\n\r\n",
        "CONNECT allowed.test.evil:443 HTTP/1.1\r\n\r\n",
    ],
)
async def test_other_domains_are_refused(proxy: DomainProxy, request_head: str) -> None:
    reply = await exchange(proxy, request_head.encode())
    assert reply.startswith(b"HTTP/1.1 403 Forbidden")
    assert b"is not in this task's allowed domains" in reply


async def test_allowed_names_may_not_reach_this_machine(proxy: DomainProxy, origin: int) -> None:
    # "localhost" is on the list, but DNS puts it on loopback: the agent's own services.
    reply = await exchange(proxy, f"CONNECT localhost:{origin} HTTP/1.1\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403 Forbidden")
    assert b"resolves to an address this proxy will not reach" in reply


async def test_malformed_requests_get_400(proxy: DomainProxy) -> None:
    assert (await exchange(proxy, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400")
    reply = await exchange(proxy, b"GET /relative HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")


async def test_unreachable_upstream_gets_502(origin: int) -> None:
    async with DomainProxy(["down.test"], resolve={"down.test": "127.0.0.1"}) as p:
        p.allow_clients(None)
        # A port that was free a moment ago: nothing listens there now.
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        reply = await exchange(p, f"CONNECT down.test:{port} HTTP/1.1\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 502 Bad Gateway")


async def test_only_the_registered_client_is_served(origin: int) -> None:
    async with DomainProxy(["allowed.test"], resolve={"allowed.test": "127.0.0.1"}) as p:
        pending = asyncio.create_task(
            exchange(p, f"CONNECT allowed.test:{origin} HTTP/1.1\r\n\r\n".encode())
        )
        await asyncio.sleep(0.1)
        assert not pending.done()  # waits for the container's address instead of failing
        p.allow_clients(["10.255.255.1"])  # somebody else: this loopback client is refused
        assert (await pending).startswith(b"HTTP/1.1 403 Forbidden")
