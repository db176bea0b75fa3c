"""Attacker: secrets under the generated config (`shoal auth init`). alice (team-a) stores a
secret and runs a job using it on node-1; bob (team-b) and node-2 go after it. Only node-1's
task gets the value; no other identity can read it, and no stream, KV value or answer holds
it."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats.errors
import pytest
import yaml

from compute.agent import AgentConfig, ComputeAgent
from orchestrator.secrets import SECRETS_BUCKET
from orchestrator.service import Orchestrator
from shared import subjects, wire
from shared.client import ShoalClient
from tests.e2e.test_security import FAST, Raw, Secured, listen, nothing_arrives, raw, tenants
from tests.integration.test_secrets import (
    RecordingEngine,
    create,
    every_stored_message,
    forms,
    secret_job,
)

__all__ = ["tenants"]  # the fixture, imported for pytest

VALUE = "team-a-db-Zq8-only-node-1"
SECRET_KV = f"KV_{SECRETS_BUCKET}"


@contextlib.asynccontextmanager
async def running(
    env: Secured, tmp: Path, *nodes: str
) -> AsyncIterator[dict[str, RecordingEngine]]:
    """The orchestrator (with a secrets key) and agents, each on its own identity."""
    config = dataclasses.replace(FAST, secrets_key=tmp / "secrets.key")
    orch = Orchestrator(await env.bus("orchestrator-1"), config)
    await orch.start()
    agents, engines = [], {}
    try:
        for name in nodes:
            engines[name] = RecordingEngine()
            agent = ComputeAgent(
                await env.bus(name),
                AgentConfig(name=name, heartbeat_interval=0.2, state_dir=tmp / name),
                engines={"noop": engines[name]},
            )
            await agent.start()
            agents.append(agent)
            await agent.wait_registered(10)
        yield engines
    finally:
        for agent in agents:
            await agent.stop()
        await orch.stop()


async def refused_request(conn: Raw, subject: str, body: bytes = b"{}") -> bool:
    """A request the server refuses to carry: no answer, and a permissions violation."""
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await conn.nc.request(subject, body, timeout=0.5)
    return await conn.refused("Publish", subject)


def login(env: Secured, identity: str) -> dict[str, Any]:
    data = yaml.safe_load(Path(env.creds(identity)).read_text())
    return {
        "user": data["user"],
        "password": data["password"],
        "inbox_prefix": data.get("inbox_prefix", "_INBOX"),
    }


async def test_only_the_executing_node_gets_a_secret(tenants: Secured, tmp_path: Path) -> None:
    key = f"$KV.{SECRETS_BUCKET}.team-a.db-password"
    async with (
        running(tenants, tmp_path, "node-1", "node-2") as engines,
        raw(tenants, "bob") as bob,
        raw(tenants, "node-2") as node2,
        await ShoalClient.connect(tenants.url, tenants.creds("alice")) as alice,
    ):
        # node-2 would like to hear node-1's offers (where the sealed value travels).
        offers = await listen(node2, subjects.compute_bid("node-1"))
        assert await node2.refused("Subscription", subjects.compute_bid("node-1"))
        made = await create(alice, "db-password", VALUE, "team-a")
        assert VALUE.encode() not in wire.encode(made)

        # bob: team-a's secret verbs are not his to send.
        for verb in ("list", "create", "delete"):
            subject = subjects.ns_api("team-a", f"secret.{verb}")
            assert await refused_request(bob, subject)
        # Neither bob nor node-2 reads the secrets bucket (ciphertext though it holds).
        for conn in (bob, node2):
            assert await refused_request(conn, f"$JS.API.DIRECT.GET.{SECRET_KV}.{key}")
            assert await refused_request(conn, f"$JS.API.STREAM.MSG.GET.{SECRET_KV}")
            await listen(conn, f"$KV.{SECRETS_BUCKET}.>")
            assert await conn.refused("Subscription", f"$KV.{SECRETS_BUCKET}.>")

        spec = {**secret_job("uses-secret", "node-1"), "Namespace": "team-a"}
        done = await alice.run(spec, timeout=30)
        assert done.state == "Completed", done.state_message
        [execution] = done.executions
        assert engines["node-1"].envs[execution.id]["DB_PASSWORD"] == VALUE
        assert engines["node-2"].envs == {}
        assert await nothing_arrives(offers)
        # alice's answers show the reference, never the value.
        described = await alice.describe(done.id)
        assert b"secret:db-password" in bytes(described.spec)
        answers = [wire.encode(described), wire.encode(await alice.history(done.id))]
        listed = await alice.bus.request(subjects.ns_api("team-a", "secret.list"), b"{}", timeout=5)
        answers.append(listed)
        assert b"db-password" in listed
        for answer in answers:
            for form in forms(VALUE):
                assert form not in answer

    # Every stored message (as the orchestrator, which may read them all).
    stored = await every_stored_message(tenants.url, **login(tenants, "orchestrator-1"))
    assert any(subject.startswith(f"{SECRET_KV}/") for subject, _ in stored)
    for subject, data in stored:
        for form in forms(VALUE):
            assert form not in data, f"the value is stored in {subject}"
