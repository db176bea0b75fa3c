"""An HTTP forward proxy (CONNECT and plain HTTP) letting a task reach only its allowed domains."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

_HEAD_LIMIT = 64 * 1024
_HEAD_TIMEOUT = 30.0
_CLIENT_WAIT = 30.0
_CHUNK = 64 * 1024
# Hop-by-hop headers (RFC 9110 7.6.1) and the proxy's own: never forwarded upstream.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    }
)


def normalize_domain(domain: str) -> str:
    """`*.example.com`, `.example.com` and `Example.COM.` all name the zone `example.com`."""
    return domain.strip().lower().removeprefix("*").strip(".")


def domain_allowed(host: str, domains: Iterable[str]) -> bool:
    """Whether `host` is one of `domains` or a subdomain of one (`api.x.com` under `x.com`)."""
    host = host.strip().lower().rstrip(".")
    return any(
        host == zone or host.endswith("." + zone) for zone in map(normalize_domain, domains) if zone
    )


class DomainProxy:
    """Forwards HTTP requests and CONNECT tunnels to allowed domains and refuses the rest (403).

    `resolve` maps host names to addresses before DNS is asked (tests map `allowed.test` to a
    local server); names resolved through DNS must not land on this machine's loopback or
    link-local addresses, so an allowed name cannot be pointed at the agent's own services.
    Only the peers named by `allow_clients` are served; connections that arrive before it is
    called wait, so a task that starts talking at once is not refused by a race.
    """

    def __init__(
        self,
        domains: Iterable[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        resolve: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.domains = tuple(d for d in map(normalize_domain, domains) if d)
        self._host = host
        self._port = port
        self._resolve = {normalize_domain(k): v for k, v in (resolve or {}).items()}
        self._connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._clients: frozenset[str] | None = None
        self._clients_known = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=_HEAD_LIMIT
        )

    def allow_clients(self, addresses: Iterable[str] | None) -> None:
        """Serve only these peers from now on; None serves anyone who can connect."""
        self._clients = None if addresses is None else frozenset(addresses)
        self._clients_known.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def __aenter__(self) -> DomainProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def allows(self, host: str) -> bool:
        return domain_allowed(host, self.domains)

    # ---- one client connection -----------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            upstream = await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # the client went away or sent garbage: nothing to answer
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()
                    with contextlib.suppress(OSError, asyncio.CancelledError):
                        await w.wait_closed()
            if task is not None:
                self._handlers.discard(task)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> asyncio.StreamWriter | None:
        peer = writer.get_extra_info("peername")
        if not await self._client_permitted(peer[0] if peer else ""):
            await _reply(writer, 403, "this proxy serves only its own task")
            return None
        async with asyncio.timeout(_HEAD_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3:
            await _reply(writer, 400, "malformed request line")
            return None
        method, target, version = parts
        if method.upper() == "CONNECT":
            host, port = _split_host_port(target, default=443)
            path = ""
        else:
            url = urlsplit(target)
            if url.scheme.lower() != "http" or not url.hostname:
                await _reply(writer, 400, "only absolute http:// URLs and CONNECT are proxied")
                return None
            host, port = url.hostname, url.port or 80
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        if not host or port is None:
            await _reply(writer, 400, f"cannot parse the target {target!r}")
            return None
        if not self.allows(host):
            log.info("proxy: refused %s %s:%s (not in %s)", method, host, port, self.domains)
            await _reply(writer, 403, f"{host} is not in this task's allowed domains")
            return None
        address = await self._address(host)
        if address is None:
            await _reply(writer, 403, f"{host} resolves to an address this proxy will not reach")
            return None
        try:
            async with asyncio.timeout(self._connect_timeout):
                up_reader, upstream = await asyncio.open_connection(address, port)
        except (OSError, TimeoutError) as exc:
            await _reply(writer, 502, f"cannot connect to {host}:{port}: {exc}")
            return None
        if method.upper() == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        else:
            # One request per connection (Connection: close both ways): a kept-alive client
            # connection can then never be reused for a second, different host.
            kept = [h for h in header_lines if h and _header_name(h) not in _HOP_HEADERS]
            if not any(_header_name(h) == "host" for h in kept):
                kept.insert(0, f"Host: {host}" + (f":{port}" if port != 80 else ""))
            upstream.write(
                f"{method} {path} {version}\r\n".encode("latin-1")
                + "".join(f"{h}\r\n" for h in kept).encode("latin-1")
                + b"Connection: close\r\n\r\n"
            )
        await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        return upstream

    async def _client_permitted(self, address: str) -> bool:
        try:
            async with asyncio.timeout(_CLIENT_WAIT):
                await self._clients_known.wait()
        except TimeoutError:
            return False
        return self._clients is None or address in self._clients

    async def _address(self, host: str) -> str | None:
        """Where to connect for `host`; None when it would reach this machine itself."""
        pinned = self._resolve.get(host.lower().rstrip("."))
        if pinned is not None:
            return pinned
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
        except OSError:
            return None
        for *_, sockaddr in infos:
            ip = ipaddress.ip_address(sockaddr[0])
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast):
                return str(ip)
        return None


def _header_name(line: str) -> str:
    return line.split(":", 1)[0].strip().lower()


def _split_host_port(target: str, default: int) -> tuple[str, int | None]:
    host, sep, port = target.rpartition(":")
    if not sep or "]" in port:  # no port, or the tail of a bare IPv6 literal
        host, port = target, str(default)
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        return host, None
    return host, number if 0 < number < 65536 else None


async def _reply(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}.get(status, "Error")
    body = f"shoal proxy: {message}\n".encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(OSError):
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the EOF on (half-close) so the other side sees the end."""
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()
