"""Secrets through a real orchestrator and agents: the value reaches the task's environment on
the executing node and appears nowhere else (every message on the server, every stored
stream, KV value and object), references stay references, and a secret missing at placement
or a node without a key fails with a clear reason."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError

from cli.secret import call
from compute.agent import AgentConfig, ComputeAgent
from compute.engines.base import RunRequest, RunResult
from compute.engines.noop import NoopEngine
from orchestrator.secrets import SECRETS_BUCKET, missing_secrets, refuse_missing_secrets
from orchestrator.service import OrchestratorConfig
from shared import sealing, wire
from shared.bus import Bus
from shared.client import ShoalClient
from shared.errors import Conflict, InvalidSpec, NotFound, ShoalError
from shared.natsserver import EmbeddedNats
from shared.spec import spec_from_data
from tests.conftest import eventually
from tests.integration.helpers_jobs import noop_job, run_cli
from tests.integration.stack import FAST, Stack

PLAINTEXT = "pw-Zq8!x7-never-seen-anywhere"


class RecordingEngine(NoopEngine):
    """The noop engine, keeping each execution's environment (in memory, printed nowhere)."""

    def __init__(self) -> None:
        self.envs: dict[str, dict[str, str]] = {}

    async def run(self, request: RunRequest) -> RunResult:
        self.envs[request.execution_id] = dict(request.env)
        return await super().run(request)


def secret_job(name: str, *nodes: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    spec = noop_job(name)
    spec["Tasks"][0]["Env"] = env or {"DB_PASSWORD": "secret:db-password", "PLAIN": "p"}
    if nodes:
        spec["Constraints"] = [{"Key": "name", "Operator": "in", "Values": list(nodes)}]
    return spec


@contextlib.asynccontextmanager
async def secret_stack(
    url: str, tmp: Path
) -> AsyncIterator[tuple[Stack, dict[str, RecordingEngine]]]:
    s = Stack(url, tmp)
    engines: dict[str, RecordingEngine] = {}
    try:
        config = OrchestratorConfig(**{**_fields(FAST), "secrets_key": tmp / "secrets.key"})
        await s.start_orchestrator(config)
        for name in ("node-0", "node-1"):
            engines[name] = await _agent(s, name)
        yield s, engines
    finally:
        await s.close()


def _fields(config: OrchestratorConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in config.__dataclass_fields__}


async def _agent(s: Stack, name: str, *, keyless: bool = False) -> RecordingEngine:
    bus = await Bus.connect(s.url, name=name)
    s._buses.append(bus)
    engine = RecordingEngine()
    config = AgentConfig(
        name=name, heartbeat_interval=0.2, state_dir=s.tmp / "agents" / name, engines=("noop",)
    )
    agent = ComputeAgent(bus, config, engines={"noop": engine})
    if keyless:  # an agent older than secrets: says hello without a public key
        agent._key = sealing.new_private_key()
        agent.public_key = ""
    await agent.start()
    await agent.wait_registered(10)
    s.agents[name] = agent
    return engine


async def create(
    client: ShoalClient, name: str, value: str, ns: str = "default", **kw: Any
) -> wire.SecretView:
    request = wire.SecretCreateRequest(name=name, value=value, namespace=ns, **kw)
    return await call(client, ns, "create", request, wire.SecretView)


def forms(plain: str) -> list[bytes]:
    """The plaintext, and its base64 at each of the three alignments (as inside a JSON bytes
    field), so an encoding of it is caught as well as the text."""
    data = plain.encode()
    found = [data]
    for skip in range(3):
        chunk = base64.b64encode(data[skip:])[4:-4]  # whole groups only
        found.append(chunk)
    return found


async def every_stored_message(url: str, **login: Any) -> list[tuple[str, bytes]]:
    """(stream/subject, data and headers) of every message in every stream on the server:
    KV buckets, object stores, SHOAL_EVENTS, SHOAL_LOGS and the rest (`login`: user and
    password, on a server that wants them)."""
    nc = await nats.connect(url, **login)
    js = nc.jetstream()
    out: list[tuple[str, bytes]] = []
    try:
        for info in await js.streams_info():
            name, state = info.config.name or "", info.state
            if not state.messages:
                continue
            for seq in range(max(state.first_seq, 1), state.last_seq + 1):
                try:
                    msg = await js.get_msg(name, seq)
                except NotFoundError:
                    continue
                headers = repr(msg.headers or {}).encode()
                out.append((f"{name}/{msg.subject}", (msg.data or b"") + headers))
    finally:
        await nc.close()
    return out


async def test_a_secret_reaches_only_the_task_env(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    # A tap on every subject, from before the first request: what any eavesdropper with
    # the broadest permissions could see on the wire.
    tap = await nats.connect(nats_server.url)
    seen: list[tuple[str, bytes]] = []

    async def heard(msg: Any) -> None:
        seen.append((msg.subject, msg.data + repr(msg.headers or {}).encode()))

    await tap.subscribe(">", cb=heard)
    try:
        async with secret_stack(nats_server.url, tmp_path) as (s, engines):
            client = await s.client()
            try:
                view = await create(client, "db-password", PLAINTEXT)
                assert (view.name, view.namespace) == ("db-password", "default")
                listed = await call(
                    client, "default", "list", wire.SecretListRequest(), wire.SecretList
                )
                assert [x.name for x in listed.secrets] == ["db-password"]

                done = await client.run(secret_job("uses-secret"), timeout=30)
                assert done.state == "Completed", done.state_message
                [execution] = done.executions
                env = engines[execution.node_id].envs[execution.id]
                assert env["DB_PASSWORD"] == PLAINTEXT and env["PLAIN"] == "p"
                other = "node-1" if execution.node_id == "node-0" else "node-0"
                assert engines[other].envs == {}

                # The reference is what the job's record, views and history show.
                described = await client.describe(done.id)
                assert b"secret:db-password" in bytes(described.spec)
                await client.history(done.id)
            finally:
                await client.close()
            await tap.flush()
            stored = await every_stored_message(nats_server.url)
    finally:
        await tap.close()

    secret_keys = [subject for subject, _ in stored if subject.startswith(f"KV_{SECRETS_BUCKET}/")]
    assert secret_keys == [f"KV_{SECRETS_BUCKET}/$KV.{SECRETS_BUCKET}.default.db-password"]
    for subject, data in stored:
        for form in forms(PLAINTEXT):
            assert form not in data, f"the plaintext is stored in {subject}"
    # The greps can see: the request that carries the value in, the events and the secret.
    creates = [data for subject, data in seen if subject.endswith(".api.secret.create")]
    assert creates and PLAINTEXT.encode() in creates[0]
    assert any(subject.startswith("SHOAL_EVENTS/") for subject, _ in stored)
    assert any(subject.startswith(f"$KV.{SECRETS_BUCKET}.") for subject, _ in seen)
    bids = [data for subject, data in seen if subject.endswith(".bid")]
    assert any(b'"Secrets"' in b for b in bids)  # sealed for the node, in its offer
    for subject, data in seen:
        if subject == "shoal.v1.ns.default.api.secret.create":
            continue  # the request that gives the orchestrator the value: its one way in
        for form in forms(PLAINTEXT):
            assert form not in data, f"the plaintext went over the wire on {subject}"


async def test_missing_secrets_for_the_submit_path(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with secret_stack(nats_server.url, tmp_path) as (s, _):
        client = await s.client()
        try:
            await create(client, "db-password", PLAINTEXT)
            bus = s.orchestrator.bus if s.orchestrator else None
            assert bus is not None
            spec = spec_from_data(secret_job("later"))
            assert await missing_secrets(bus, spec, "default") == []
            assert await missing_secrets(bus, spec, "team-b") == [
                "Tasks[0].Env.DB_PASSWORD: secret 'db-password' does not exist in namespace "
                "'team-b' (create it first: shoal secret create db-password -n team-b ...)"
            ]
            deleted = await call(
                client, "default", "delete", wire.SecretRef(name="db-password"), wire.SecretView
            )
            assert deleted.name == "db-password"
            missing = await missing_secrets(bus, spec, "default")
            assert len(missing) == 1 and "DB_PASSWORD" in missing[0]
            with pytest.raises(InvalidSpec) as refused:
                await refuse_missing_secrets(bus, spec, "default")
            [problem] = refused.value.problems
            assert problem.path == "Tasks[0].Env.DB_PASSWORD"
            assert problem.message.startswith("secret 'db-password' does not exist")
            odd = spec_from_data(secret_job("odd", env={"X": "secret:a.b"}))
            assert await missing_secrets(bus, odd, "default") == [
                "Tasks[0].Env.X: secret name 'a.b' must be 1-128 characters of letters, digits, "
                "'_' or '-'"
            ]
            plain = spec_from_data(secret_job("plain", env={"X": "y"}))
            assert await missing_secrets(bus, plain, "default") == []
        finally:
            await client.close()


async def test_a_secret_deleted_while_its_job_waits_fails_the_execution(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with secret_stack(nats_server.url, tmp_path) as (s, _):
        client = await s.client()
        try:
            await create(client, "db-password", PLAINTEXT)
            spec = secret_job("waits", "late-node")
            spec["Tasks"][0]["Timeouts"] = {"QueueTimeout": 60}
            job_id = await client.submit(spec)  # its secret exists: taken
            await client.wait(job_id, timeout=15, until=lambda v: v.state == "Queued")
            await call(
                client, "default", "delete", wire.SecretRef(name="db-password"), wire.SecretView
            )
            await _agent(s, "late-node")  # now it can be placed: its secret is gone
            done = await client.wait(job_id, timeout=30)
            # The execution fails, saying which variable and secret, and is not retried.
            assert done.state == "Failed"
            assert "Env DB_PASSWORD refers to secret 'db-password'" in done.state_message
            assert "does not exist in namespace 'default'" in done.state_message
            [failed] = done.executions
            assert (failed.node_id, failed.compute_state) == ("late-node", "failed")
        finally:
            await client.close()


async def test_a_node_without_a_key_gets_no_secret(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with secret_stack(nats_server.url, tmp_path) as (s, _):
        old = await _agent(s, "old-node", keyless=True)
        client = await s.client()
        try:
            await create(client, "db-password", PLAINTEXT)
            done = await client.run(secret_job("on-old", "old-node"), timeout=30)
            assert done.state == "Failed"
            assert "old-node" in done.state_message and "public key" in done.state_message
            assert old.envs == {}
            # A job without secrets still runs there.
            plain = await client.run(
                secret_job("plain-on-old", "old-node", env={"A": "b"}), timeout=30
            )
            assert plain.state == "Completed", plain.state_message
        finally:
            await client.close()


async def test_secret_verbs(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with secret_stack(nats_server.url, tmp_path) as (s, _):
        client = await s.client()
        try:
            first = await create(client, "token", "one", "team-a")
            with pytest.raises(Conflict, match=r"already exists in namespace 'team-a'.*--update"):
                await create(client, "token", "two", "team-a")
            again = await create(client, "token", "two", "team-a", update=True)
            assert again.created_at == first.created_at and again.updated_at >= first.updated_at
            await create(client, "token", "other", "team-b")

            def names(reply: wire.SecretList) -> list[tuple[str, str]]:
                return [(x.namespace, x.name) for x in reply.secrets]

            listed = await call(client, "team-a", "list", wire.SecretListRequest(), wire.SecretList)
            assert names(listed) == [("team-a", "token")]
            assert b"two" not in wire.encode(listed) and b"one" not in wire.encode(listed)
            with pytest.raises(InvalidSpec, match="names 'team-b'"):
                await call(
                    client,
                    "team-a",
                    "list",
                    wire.SecretListRequest(namespace="team-b"),
                    wire.SecretList,
                )
            with pytest.raises(InvalidSpec, match="secret name"):
                await create(client, "a.b", "x", "team-a")
            with pytest.raises(NotFound, match="no secret 'nope' in namespace 'team-a'"):
                await call(client, "team-a", "delete", wire.SecretRef(name="nope"), wire.SecretView)
            # Values are decrypted with the master key the file holds; they are not in KV.
            orchestrator = s.orchestrator
            assert orchestrator is not None
            assert await orchestrator.secrets.values("team-a", ["token"]) == {"token": "two"}
            kv = await orchestrator.bus.kv(SECRETS_BUCKET)
            entry = await kv.get("team-a.token")
            assert entry is not None and entry.value is not None and b"two" not in entry.value
            # Admins, on the cluster subject: every namespace.
            raw = await client.bus.request(
                "shoal.v1.api.secret.list", wire.encode(wire.SecretListRequest()), timeout=5
            )
            reply = wire.decode(raw, wire.ApiReply)
            assert reply.ok, reply.error
            every = wire.decode(reply.data, wire.SecretList)
            assert names(every) == [("team-a", "token"), ("team-b", "token")]
        finally:
            await client.close()


async def test_without_a_master_key_secrets_cannot_be_created(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    s = Stack(nats_server.url, tmp_path)
    try:
        await s.start_orchestrator()
        client = await s.client()
        try:
            with pytest.raises(ShoalError, match="no secrets key: start it with --secrets-key"):
                await create(client, "x", "y")
        finally:
            await client.close()
    finally:
        await s.close()


async def test_the_node_key_survives_a_restart(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with secret_stack(nats_server.url, tmp_path) as (s, _):
        first = s.agents["node-0"].public_key
        assert len(sealing.unb64(first, "key")) == 32
        await s.kill_agent("node-0")
        await _agent(s, "node-0")
        assert s.agents["node-0"].public_key == first
        orchestrator = s.orchestrator
        assert orchestrator is not None
        await eventually(
            lambda: orchestrator.registry.public_key("node-0") == first, what="the key stored"
        )


async def test_the_secret_command(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    url = nats_server.url
    async with secret_stack(url, tmp_path):
        value = tmp_path / "value.txt"
        value.write_text(PLAINTEXT)
        made = await run_cli("secret", "create", "db-password", "--from-file", str(value), url=url)
        assert made.code == 0, made.stderr
        assert made.stdout.strip() == "secret db-password created in namespace default"
        again = await run_cli(
            "secret", "create", "db-password", "--from-literal", "x", "-n", "default", url=url
        )
        assert again.code == 1 and "already exists" in again.stderr and "--update" in again.stderr
        both = await run_cli(
            "secret", "create", "x", "--from-literal", "a", "--from-file", str(value), url=url
        )
        assert both.code == 2 and "exactly one of --from-file or --from-literal" in both.stderr
        other = await run_cli(
            "secret",
            "create",
            "db-password",
            "--from-literal",
            "b",
            url=url,
            env={"SHOAL_NAMESPACE": "team-b"},
        )
        assert other.stdout.strip() == "secret db-password created in namespace team-b"
        listed = await run_cli("secret", "list", "-o", "json", url=url)
        assert listed.code == 0, listed.stderr
        assert [s["Name"] for s in json.loads(listed.stdout)] == ["db-password"]
        table = await run_cli("secret", "list", url=url)
        assert "db-password" in table.stdout and PLAINTEXT not in table.stdout + table.stderr
        gone = await run_cli("secret", "delete", "db-password", url=url)
        assert gone.stdout.strip() == "secret db-password deleted from namespace default"
        missing = await run_cli("secret", "delete", "db-password", url=url)
        assert (
            missing.code == 1 and "no secret 'db-password' in namespace 'default'" in missing.stderr
        )


async def test_a_submit_naming_a_missing_secret_is_refused(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with secret_stack(nats_server.url, tmp_path) as (s, _):
        client = await s.client()
        try:
            with pytest.raises(InvalidSpec) as refused:
                await client.submit(secret_job("needs-it"))
            [problem] = refused.value.problems
            assert problem.path == "Tasks[0].Env.DB_PASSWORD"
            assert "secret 'db-password' does not exist in namespace 'default'" in problem.message
            assert not (await client.jobs())  # nothing was stored
            await create(client, "db-password", PLAINTEXT)
            done = await client.run(secret_job("needs-it"), timeout=30)
            assert done.state == "Completed", done.state_message
            await call(
                client, "default", "delete", wire.SecretRef(name="db-password"), wire.SecretView
            )
            with pytest.raises(
                InvalidSpec, match=r"Tasks\[0\]\.Env\.DB_PASSWORD: secret 'db-password'"
            ):
                await client.submit(secret_job("needs-it-again"))
            with pytest.raises(InvalidSpec, match="does not exist"):
                await client.rerun(done.id)
        finally:
            await client.close()
