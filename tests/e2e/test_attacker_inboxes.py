"""Attacker: a node or a user listening for replies meant for others (private inboxes)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import yaml

from shared.client import ShoalClient
from tests.e2e.test_security import Raw, Secured, listen, nothing_arrives, raw, running, tenants

__all__ = ["tenants"]  # the fixture, imported for pytest

# The identities an attacker would like to overhear: every other one's inbox, and all of them.
THEIR_INBOXES = (
    "_INBOX.>",
    "_INBOX.*.>",
    "_INBOX.alice.>",
    "_INBOX.orchestrator-1.>",
    "_INBOX.node-1.>",
    ">",
)


def job(secret: str) -> dict[str, object]:
    return {
        "Type": "batch",
        "Count": 1,
        "Tasks": [
            {
                "Name": "main",
                "Engine": {"Type": "noop", "Params": {"Stdout": "done\n"}},
                "Env": {"DB_PASSWORD": secret},
            }
        ],
    }


async def eavesdrop(conn: Raw) -> list[asyncio.Queue[str]]:
    """Subscribe to every inbox but the attacker's own; each must be refused."""
    queues = []
    for subject in THEIR_INBOXES:
        queues.append(await listen(conn, subject))
        assert await conn.refused("Subscription", subject), (subject, conn.errors)
    return queues


async def test_the_eavesdropping_probe_receives_nothing(tenants: Secured, tmp_path: Path) -> None:
    """The issue's probe: node-2's credentials subscribe to `_INBOX.>` while alice submits a
    job carrying DB_PASSWORD, describes it, lists jobs and nodes. Refused; nothing arrives
    (on the issue's server it received 64 replies in 6 seconds, 6 with the password)."""
    password = f"hunter2-{secrets.token_hex(8)}"
    async with (
        running(tenants, tmp_path, "node-1"),
        raw(tenants, "node-2") as node2,
        raw(tenants, "bob") as bob,
    ):
        overheard = [*await eavesdrop(node2), *await eavesdrop(bob)]
        received: list[bytes] = []

        async def record(msg: object) -> None:
            received.append(getattr(msg, "data", b""))

        # Even the attacker's own prefix with another's token, chosen on its side, is refused.
        for conn, subject in ((node2, "_INBOX.alice.x"), (bob, "_INBOX.node-1.x")):
            await conn.nc.subscribe(subject, cb=record)
            assert await conn.refused("Subscription", subject), conn.errors

        async with await ShoalClient.connect(tenants.url, tenants.creds("alice")) as alice:
            replies = 0
            for _ in range(3):
                job_id = await alice.submit(job(password))
                view = await alice.wait(job_id, timeout=30)
                assert view.state == "Completed", view
                await alice.describe(job_id)
                await alice.jobs()
                await alice.nodes()
                replies += 5
            assert replies > 0
        for queue in overheard:
            assert await nothing_arrives(queue, within=0.5)
        assert received == []
        # The attacker's connection still works for what it may do: its own inbox.
        own = await listen(node2, "_INBOX.node-2.>")
        await node2.nc.publish("shoal.v1.node.node-2.heartbeat", b"{}", reply="_INBOX.node-2.x")
        assert await nothing_arrives(own, within=0.2)


async def test_every_identity_listens_only_on_its_own_inbox(tenants: Secured) -> None:
    creds_dir = tenants.auth / "creds"
    for creds in sorted(creds_dir.iterdir()):
        identity = creds.stem
        data = yaml.safe_load(creds.read_text())
        assert data["inbox_prefix"] == f"_INBOX.{identity}", creds
        async with raw(tenants, identity) as conn:
            # Its own inbox works (a request to itself comes back on it) ...
            own = await listen(conn, f"_INBOX.{identity}.>")
            assert not conn.errors, (identity, conn.errors)
            assert conn.nc.new_inbox().startswith(f"_INBOX.{identity}.")
            # ... no other identity's, nor all of them.
            others = [f"_INBOX.{o.stem}.>" for o in creds_dir.iterdir() if o != creds]
            for other in ("_INBOX.>", "_INBOX.*.*", *others):
                await conn.nc.subscribe(other)
                assert await conn.refused("Subscription", other), (identity, other, conn.errors)
            assert await nothing_arrives(own, within=0.05)


async def test_requests_over_private_inboxes_reach_every_role(
    tenants: Secured, tmp_path: Path
) -> None:
    """What Shoal does over the secured server still works with per-identity prefixes: API
    requests, the orchestrator's KV watches and consumers, node hello/bid/commands, log
    reads through named consumers, and the admin's cluster-wide view."""
    async with (
        running(tenants, tmp_path, "node-1", "node-2"),
        await ShoalClient.connect(tenants.url, tenants.creds("carol")) as carol,
        await ShoalClient.connect(tenants.url, tenants.creds("root"), namespace="team-a") as root,
    ):
        assert carol.namespace == "team-a"
        job_id = await carol.submit(job("not-a-secret"))
        view = await carol.wait(job_id, timeout=30)
        assert view.state == "Completed", view
        lines = b"".join([line.data async for line in carol.logs(job_id)])
        assert lines == b"done\n"
        assert {n.id for n in await root.nodes()} == {"node-1", "node-2"}
        assert (await root.describe(job_id)).id == job_id  # an admin sees every namespace
