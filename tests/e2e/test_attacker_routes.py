"""Attacker: a server of one's own joining the NATS cluster through its routes, where no
credentials are asked, to read and inject every message (route TLS, mutual, own CA)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from cli.auth import generate
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.e2e.test_security import Secured, listen, nothing_arrives, raw

REPO = Path(__file__).resolve().parents[2]
CLUSTER_CONF = REPO / "deploy" / "nats" / "nats-cluster.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def monitor(port: int, page: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{page}", timeout=5) as reply:
        data: dict[str, object] = json.loads(reply.read())
        return data


def peers(port: int) -> set[str]:
    """The servers a member holds routes to (a pool of several routes per peer)."""
    routes = monitor(port, "routez").get("routes") or []
    assert isinstance(routes, list)
    return {str(r.get("remote_name") or r.get("remote_id")) for r in routes}


@dataclass
class Member:
    server: EmbeddedNats
    route: int
    http: int


@pytest.fixture
async def members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[Member]]:
    """Two members of the deploy config, with the routes' TLS `shoal auth init` writes."""
    auth = tmp_path / "auth"
    generate(auth, nodes=["node-1"], orchestrators=1, users=["alice"])
    conf = auth / "nats-cluster.conf"
    shutil.copyfile(CLUSTER_CONF, conf)
    routes = [free_port() for _ in range(2)]
    monkeypatch.setenv("NATS_ROUTES", json.dumps([f"nats://127.0.0.1:{p}" for p in routes]))
    out: list[Member] = []
    try:
        for i, route in enumerate(routes):
            monkeypatch.setenv("NATS_SERVER_NAME", f"nats-{i}")
            http = free_port()
            server = EmbeddedNats(
                tmp_path / f"nats-{i}",
                config=conf,
                extra_args=("--cluster", f"nats://127.0.0.1:{route}", "-m", str(http)),
            )
            out.append(Member(server, route, http))
            await server.start()
        for m in out:
            await eventually(lambda m=m: len(peers(m.http)) == 1, timeout=30, what="routes up")
        yield out
    finally:
        for m in out:
            await m.server.stop()


async def rogue(tmp_path: Path, target: Member, *extra: str) -> tuple[EmbeddedNats, int]:
    """A nats-server of the attacker's, routing to `target` under the cluster's name."""
    http = free_port()
    server = EmbeddedNats(
        tmp_path / f"rogue-{http}",
        extra_args=(
            "-n",
            f"rogue-{http}",
            "--cluster_name",
            "shoal",
            "--cluster",
            f"nats://127.0.0.1:{free_port()}",
            "--routes",
            f"nats://127.0.0.1:{target.route}",
            "-m",
            str(http),
            *extra,
        ),
    )
    await server.start()
    return server, http


async def never_joins(rogue_http: int, members: list[Member], within: float = 3.0) -> bool:
    """Over `within` seconds, the rogue holds no route and the members only each other."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert peers(rogue_http) == set()
        names = {f"nats-{i}" for i in range(len(members))}
        for i, m in enumerate(members):
            assert peers(m.http) == names - {f"nats-{i}"}
        await asyncio.sleep(0.2)
    return True


async def test_routes_require_tls(members: list[Member]) -> None:
    for m in members:
        cluster = monitor(m.http, "varz")["cluster"]
        assert isinstance(cluster, dict)
        assert cluster.get("tls_required") is True and cluster.get("tls_verify") is True, cluster


async def test_a_plaintext_server_cannot_join(members: list[Member], tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    server, http = await rogue(tmp_path, members[0])
    try:
        async with raw(Secured(members[0].server, auth), "orchestrator-1") as orch:
            heard = await listen(orch, "shoal.v1.>")
            assert await never_joins(http, members)
            # A client of the rogue server (no credentials needed there) injects a message:
            # it never reaches the cluster.
            nc = await nats.connect(server.url)
            try:
                await nc.publish("shoal.v1.node.node-1.hello", b"{}")
                await nc.flush()
            finally:
                await nc.close()
            assert await nothing_arrives(heard, within=0.5)
    finally:
        await server.stop()


async def test_a_server_with_another_ca_cannot_join(members: list[Member], tmp_path: Path) -> None:
    # The attacker's own route certificate, from a `shoal auth init` of its own.
    theirs = tmp_path / "theirs"
    generate(theirs, nodes=[], orchestrators=0)
    d = theirs / "tls" / "routes"
    conf = tmp_path / "rogue.conf"
    conf.write_text(
        "cluster { tls { "
        f'cert_file: "{d / "route.pem"}", key_file: "{d / "route-key.pem"}", '
        f'ca_file: "{d / "route-ca.pem"}", verify: true, insecure: true '
        "} }\n"
    )
    server, http = await rogue(tmp_path, members[1], "-c", str(conf))
    try:
        assert await never_joins(http, members)
    finally:
        await server.stop()
