"""Per-role NATS users from `shoal auth init`: jobs run end to end, each role stays in its lane."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import pytest
import yaml
from click.testing import CliRunner
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from cli.auth import (
    BUCKETS,
    admin_permissions,
    auth,
    compute_permissions,
    generate,
    user_permissions,
)
from compute.agent import AgentConfig, ComputeAgent
from orchestrator.secrets import SECRETS_BUCKET
from orchestrator.service import Orchestrator, OrchestratorConfig
from shared import subjects
from shared.bus import Bus
from shared.client import ShoalClient, new_job_id
from shared.errors import ShoalError, Unavailable
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually

FAST = OrchestratorConfig(heartbeat_interval=0.2, disconnect_timeout=2.0, bid_timeout=2.0)
SHOAL = Path(sys.executable).parent / "shoal"
REPO = Path(__file__).resolve().parents[2]
NOOP = {
    "Name": "secured",
    "Type": "batch",
    "Count": 2,
    "Tasks": [{"Name": "main", "Engine": {"Type": "noop", "Params": {"Stdout": "hi there\n"}}}],
}


@dataclass
class Secured:
    """A nats-server running the generated config, and where the creds files are."""

    server: EmbeddedNats
    auth: Path
    buses: list[Bus] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def creds(self, identity: str) -> str:
        return str(self.auth / "creds" / f"{identity}.creds")

    async def bus(self, identity: str) -> Bus:
        bus = await Bus.connect(self.url, creds=self.creds(identity), name=identity)
        self.buses.append(bus)
        return bus


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    auth_dir = tmp_path / "auth"
    generate(auth_dir, nodes=["node-1", "node-2"], orchestrators=1, users=["alice"])
    server = EmbeddedNats(tmp_path / "nats", config=auth_dir / "nats-server.conf")
    await server.start()
    env = Secured(server, auth_dir)
    try:
        yield env
    finally:
        for bus in env.buses:
            await bus.close()
        await server.stop()


@pytest.fixture
async def tenants(tmp_path: Path) -> AsyncIterator[Secured]:
    """The attacker tests' site: alice in team-a, bob in team-b, carol in both, admin root."""
    auth_dir = tmp_path / "auth"
    generate(
        auth_dir,
        nodes=["node-1", "node-2"],
        orchestrators=1,
        users=["alice:team-a", "bob:team-b", "carol:team-a+team-b"],
        admins=["root"],
    )
    async with EmbeddedNats(tmp_path / "nats", config=auth_dir / "nats-server.conf") as server:
        env = Secured(server, auth_dir)
        try:
            yield env
        finally:
            for bus in env.buses:
                await bus.close()


@contextlib.asynccontextmanager
async def running(env: Secured, tmp: Path, *nodes: str) -> AsyncIterator[Orchestrator]:
    """The orchestrator and agents, each on its own identity."""
    orch = Orchestrator(await env.bus("orchestrator-1"), FAST)
    await orch.start()
    agents = []
    try:
        for name in nodes:
            config = AgentConfig(name=name, heartbeat_interval=0.2, state_dir=tmp / name)
            agent = ComputeAgent(await env.bus(name), config)
            await agent.start()
            agents.append(agent)
            await agent.wait_registered(10)
        yield orch
    finally:
        for agent in agents:
            await agent.stop()
        await orch.stop()


class Raw:
    """A plain nats-py connection as one identity, recording the errors the server sends."""

    def __init__(self, nc: NatsClient, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors

    @classmethod
    async def connect(cls, url: str, creds: str) -> Raw:
        data = yaml.safe_load(Path(creds).read_text())
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(
            url,
            user=data["user"],
            password=data["password"],
            inbox_prefix=data.get("inbox_prefix", "_INBOX"),
            error_cb=on_error,
        )
        return cls(nc, errors)

    async def refused(self, what: str, subject: str) -> bool:
        """The server reported a permissions violation for `what` (Publish|Subscription)."""
        await self.nc.flush(timeout=2)
        wanted = f'permissions violation for {what} to "{subject}"'.lower()

        def reported() -> bool:
            return any(wanted in e.lower() for e in self.errors)

        # nats-py hands the server's -ERR to the error callback in a task of its own.
        with contextlib.suppress(AssertionError):
            await eventually(reported, timeout=2, what=wanted)
        return reported()

    async def close(self) -> None:
        await self.nc.close()


@contextlib.asynccontextmanager
async def raw(env: Secured, identity: str) -> AsyncIterator[Raw]:
    conn = await Raw.connect(env.url, env.creds(identity))
    try:
        yield conn
    finally:
        await conn.close()


async def nothing_arrives(inbox: asyncio.Queue[str], within: float = 0.5) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            subject = await inbox.get()
            raise AssertionError(f"a refused message arrived on {subject}")
    return True


async def listen(conn: Raw, subject: str) -> asyncio.Queue[str]:
    got: asyncio.Queue[str] = asyncio.Queue()

    async def cb(msg: Msg) -> None:
        got.put_nowait(msg.subject)

    await conn.nc.subscribe(subject, cb=cb)
    await conn.nc.flush()
    return got


# ---- the generated files -----------------------------------------------------------------------


def test_auth_init_writes_private_files(tmp_path: Path) -> None:
    out = tmp_path / "auth"
    args = ["init", "--out", str(out), "--nodes", "node-1,node-2", "--users", "alice,bob:team-b"]
    result = CliRunner().invoke(auth, [*args, "--orchestrators", "2", "--admins", "root"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (out / "creds").iterdir())
    assert names == [
        "alice.creds",
        "bob.creds",
        "node-1.creds",
        "node-2.creds",
        "orchestrator-1.creds",
        "orchestrator-2.creds",
        "root.creds",
    ]
    keys = [p for p in (out / "tls").rglob("*key.pem")]
    assert len(keys) == 2  # the routes' CA and certificate keys
    for secret in [out / "users.conf", out / "k8s-secrets.yaml", *(out / "creds").iterdir(), *keys]:
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    creds = yaml.safe_load((out / "creds" / "node-1.creds").read_text())
    assert creds["user"] == "node-1" and len(creds["password"]) >= 32
    assert creds["inbox_prefix"] == "_INBOX.node-1" and "namespace" not in creds
    bob = yaml.safe_load((out / "creds" / "bob.creds").read_text())
    assert (bob["inbox_prefix"], bob["namespace"]) == ("_INBOX.bob", "team-b")
    assert yaml.safe_load((out / "creds" / "alice.creds").read_text())["namespace"] == "default"
    secrets_docs = list(yaml.safe_load_all((out / "k8s-secrets.yaml").read_text()))
    assert {d["metadata"]["name"] for d in secrets_docs} == {
        "shoal-nats-auth",
        "shoal-creds",
        "shoal-orchestrator-creds",
    }
    again = CliRunner().invoke(auth, args)
    assert again.exit_code != 0 and "--force" in again.output
    bad = CliRunner().invoke(auth, ["init", "--out", str(tmp_path / "x"), "--nodes", "a/b"])
    assert bad.exit_code == 2 and "node name 'a/b'" in bad.output


def test_permissions_never_let_compute_or_users_write_state() -> None:
    for perms in (
        compute_permissions("node-1"),
        user_permissions("alice", ["team-a", "team-b"]),
        admin_permissions("root"),
    ):
        for subject in perms.publish:
            assert not subject.startswith("$KV."), subject
            for verb in ("CREATE", "UPDATE", "DELETE", "PURGE"):
                # a node manages its own results bucket, and no other stream
                own = subject.endswith(".OBJ_shoal-results-node-node-1")
                assert own or not subject.startswith(f"$JS.API.STREAM.{verb}"), subject
            assert subject not in ("$JS.API.>", ">", "$JS.>")
        # Each identity listens only on its own inbox.
        assert not [s for s in perms.subscribe if s.startswith("_INBOX.") and s.count(".") < 2]
    # Every KV bucket the protocol names is one the orchestrator may write.
    declared = {v for k, v in vars(subjects).items() if k.endswith("_BUCKET")}
    assert declared | {SECRETS_BUCKET} == set(BUCKETS)


# ---- a secured deployment, end to end ------------------------------------------------------------


async def test_job_runs_end_to_end_with_per_role_users(secured: Secured, tmp_path: Path) -> None:
    async with (
        running(secured, tmp_path, "node-1", "node-2"),
        await ShoalClient.connect(secured.url, secured.creds("alice")) as alice,
    ):
        job_id = new_job_id()
        # Users may follow a job's stored state (what `run()` ends on).
        state = await alice.bus.subscription(subjects.state_of_job("default", job_id))
        unnamed = {k: v for k, v in NOOP.items() if k != "Name"}  # a name would choose the id
        await alice.submit_full(unnamed, job_id=job_id)
        # The job's and its executions' records live in two streams: either may come first.
        seen = []
        while (msg := await state.next(timeout=10)) is not None:
            seen.append(msg.subject)
            if msg.subject == f"shoal.v1.ns.default.state.{job_id}.job":
                break
        await state.close()
        assert f"shoal.v1.ns.default.state.{job_id}.job" in seen, seen
        view = await alice.wait(job_id, timeout=30)
        assert view.state == "Completed", view
        assert {e.node_id for e in view.executions} == {"node-1", "node-2"}
        out = b"".join([line.data async for line in alice.logs(job_id)])
        assert out.count(b"hi there") == 2
        folders = await alice.results(job_id, tmp_path / "results")
        assert len(folders) == 2
        assert len(await alice.history(job_id)) >= 3
        assert {n.id for n in await alice.nodes()} == {"node-1", "node-2"}

        # The shoal command itself, with --creds.
        spec = tmp_path / "job.yaml"
        spec.write_text(yaml.safe_dump({**NOOP, "Count": 1, "Name": "from-cli"}))
        base = [str(SHOAL), "--nats", secured.url, "--creds", secured.creds("alice")]
        for args in (["job", "run", str(spec), "--id-only"], ["job", "list"]):
            proc = await asyncio.create_subprocess_exec(
                *base,
                *args,
                cwd=str(REPO),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await proc.communicate()
            assert proc.returncode == 0, stderr.decode()
        assert b"from-cli" in stdout


async def test_node_cannot_act_as_another_node(secured: Secured, tmp_path: Path) -> None:
    async with (
        running(secured, tmp_path),
        raw(secured, "orchestrator-1") as orch,
        raw(secured, "node-1") as node1,
    ):
        seen = await listen(orch, f"{subjects.PREFIX}.node.node-2.>")
        own = await listen(orch, f"{subjects.PREFIX}.node.node-1.heartbeat")
        for subject in (
            subjects.node_heartbeat("node-2"),
            subjects.node_hello("node-2"),
            subjects.node_update("node-2"),
        ):
            await node1.nc.publish(subject, b"{}")
            assert await node1.refused("Publish", subject), node1.errors
        await nothing_arrives(seen)
        # The same connection may speak for itself (so the listener above works).
        await node1.nc.publish(subjects.node_heartbeat("node-1"), b"{}")
        async with asyncio.timeout(5):
            assert await own.get() == subjects.node_heartbeat("node-1")

        # No listening to another node's commands.
        theirs = subjects.compute_cmd("node-2")
        await node1.nc.subscribe(theirs)
        assert await node1.refused("Subscription", theirs), node1.errors

        # No writes to state: KV puts and stream management are refused, nothing changes.
        for subject in (
            f"$KV.{subjects.JOBS_BUCKET}.x",
            f"$KV.{subjects.NODES_BUCKET}.node-2",
            f"$JS.API.STREAM.DELETE.{subjects.UPDATES_STREAM}",
            f"$JS.API.STREAM.PURGE.{subjects.EVENTS_STREAM}",
            f"$JS.API.STREAM.CREATE.{subjects.EVENTS_STREAM}",
        ):
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await node1.nc.request(subject, b"{}", timeout=0.5)
            assert await node1.refused("Publish", subject), node1.errors
        check = await secured.bus("orchestrator-1")
        jobs = await check.kv(subjects.JOBS_BUCKET)
        assert await jobs.get("x") is None
        info = await check.request(f"$JS.API.STREAM.INFO.{subjects.UPDATES_STREAM}", b"")
        assert b'"error"' not in info


async def test_cli_user_reads_but_cannot_write(secured: Secured, tmp_path: Path) -> None:
    async with running(secured, tmp_path, "node-1"), raw(secured, "alice") as alice:
        for subject in (
            f"$KV.{subjects.JOBS_BUCKET}.default.x",
            f"$KV.{subjects.EXECUTIONS_BUCKET}.j.e",
            f"$JS.API.STREAM.DELETE.{subjects.LOGS_STREAM}",
            f"$JS.API.STREAM.PURGE.{subjects.LOGS_STREAM}",
            subjects.node_heartbeat("node-1"),
            f"{subjects.PREFIX}.ns.default.logs.j-x.node-1.e-x.stdout",
            f"{subjects.PREFIX}.ns.default.events.j-x",
            f"{subjects.PREFIX}.api.node.approve",  # cluster verbs: admins only
            f"{subjects.PREFIX}.api.job.list",  # every namespace's jobs: admins only
            subjects.evaluation("j-x"),
            subjects.compute_cmd("node-1"),
        ):
            await alice.nc.publish(subject, b"{}")
            assert await alice.refused("Publish", subject), (subject, alice.errors)
        for subject in (subjects.compute_cmd("node-1"), subjects.ALL_HEARTBEATS, "$KV.>"):
            await alice.nc.subscribe(subject)
            assert await alice.refused("Subscription", subject), (subject, alice.errors)
        check = await secured.bus("orchestrator-1")
        assert await (await check.kv(subjects.JOBS_BUCKET)).get("default.x") is None


async def test_a_refused_request_fails_at_once_not_at_its_timeout(secured: Secured) -> None:
    # The server's refusal reaches only the connection's error callback; the request itself
    # would wait out its timeout and blame NATS ("timed out"). It fails with the refusal.
    alice = await secured.bus("alice")
    bid = subjects.compute_bid("node-1")
    with pytest.raises(ShoalError, match=f"request {bid}: NATS refused it: this identity may"):
        await alice.request(bid, b"{}", timeout=20)
    jobs = await (await secured.bus("orchestrator-1")).kv(subjects.JOBS_BUCKET)
    state = f"$KV.{subjects.JOBS_BUCKET}.default.x"
    with pytest.raises(ShoalError, match=rf"refused it: .* may not publish to {re.escape(state)}"):
        await alice.js_publish(state, b"{}", timeout=20)
    assert await jobs.get("default.x") is None
    # and the connection keeps working for what the identity may do
    with pytest.raises(Unavailable, match="nobody is listening"):
        await alice.request(f"{subjects.PREFIX}.ns.default.api.job.describe", b"{}", timeout=20)


async def test_wrong_password_is_refused_clearly(secured: Secured, tmp_path: Path) -> None:
    bad = tmp_path / "bad.creds"
    bad.write_text("user: node-1\npassword: not-the-password\n")
    for fail_fast in (True, False):  # a service (no fail-fast) must not retry forever either
        async with asyncio.timeout(10):
            with pytest.raises(Unavailable, match=r"(?i)refused the credentials.*authorization"):
                await Bus.connect(secured.url, creds=str(bad), fail_fast=fail_fast)
    proc = await asyncio.create_subprocess_exec(
        str(SHOAL),
        "--nats",
        secured.url,
        "--creds",
        str(bad),
        "job",
        "list",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await proc.communicate()
    assert proc.returncode == 5, stderr
    assert b"Authorization Violation" in stderr and b"Traceback" not in stderr
    # No credentials at all: refused the same way.
    with pytest.raises(Unavailable, match=r"(?i)authorization"):
        await Bus.connect(secured.url, fail_fast=True)
    with pytest.raises(ShoalError, match="needs `user:`"):
        (tmp_path / "junk.creds").write_text("hello\n")
        await Bus.connect(secured.url, creds=str(tmp_path / "junk.creds"))


async def test_tls_with_the_generated_ca(tmp_path: Path) -> None:
    auth_dir = tmp_path / "auth"
    generate(auth_dir, nodes=["node-1"], users=["alice"], tls=True)
    assert "tls {" in (auth_dir / "nats-server.conf").read_text()
    async with EmbeddedNats(tmp_path / "nats", config=auth_dir / "nats-server.conf") as server:
        orch_bus = await Bus.connect(server.url, creds=str(auth_dir / "creds/orchestrator-1.creds"))
        agent_bus = await Bus.connect(server.url, creds=str(auth_dir / "creds/node-1.creds"))
        try:
            async with (
                Orchestrator(orch_bus, FAST),
                ComputeAgent(
                    agent_bus,
                    AgentConfig(name="node-1", heartbeat_interval=0.2, state_dir=tmp_path),
                ),
                await ShoalClient.connect(server.url, str(auth_dir / "creds/alice.creds")) as c,
            ):
                await eventually(c.nodes, what="node-1 registered over TLS")
                view = await c.wait(await c.submit({**NOOP, "Count": 1}), timeout=30)
                assert view.state == "Completed", view
        finally:
            await agent_bus.close()
            await orch_bus.close()

        # Without the CA (or with the wrong one) the handshake fails at once, clearly.
        plain = tmp_path / "no-ca.creds"
        data = yaml.safe_load((auth_dir / "creds/alice.creds").read_text())
        plain.write_text(yaml.safe_dump({"user": data["user"], "password": data["password"]}))
        async with asyncio.timeout(10):
            with pytest.raises(Unavailable, match=r"(?i)tls handshake.*certificate verify failed"):
                await Bus.connect(server.url, creds=str(plain))
            with pytest.raises(Unavailable, match=r"(?i)tls handshake"):
                await Bus.connect(
                    server.url, creds=str(plain), tls_ca=str(auth_dir / "tls/server.pem")
                )
    assert os.access(auth_dir / "tls/ca-key.pem", os.R_OK)


async def test_added_user_works_after_a_reload_and_nobody_else_changes(tenants: Secured) -> None:
    result = CliRunner().invoke(
        auth, ["add-user", "--out", str(tenants.auth), "erin", "--namespaces", "team-e"]
    )
    assert result.exit_code == 0, result.output
    assert tenants.server.pid is not None
    os.kill(tenants.server.pid, signal.SIGHUP)  # nats-server --signal reload

    async def erin_connects() -> bool:
        try:
            bus = await Bus.connect(tenants.url, creds=tenants.creds("erin"), fail_fast=True)
        except Unavailable:
            return False
        await bus.close()
        return True

    await eventually(erin_connects, what="erin admitted after the reload")
    async with raw(tenants, "erin") as erin, raw(tenants, "alice") as alice:
        await listen(erin, f"{subjects.PREFIX}.ns.team-e.state.>")
        assert not erin.errors
        subject = f"{subjects.PREFIX}.ns.team-a.state.>"
        await erin.nc.subscribe(subject)
        assert await erin.refused("Subscription", subject), erin.errors
        await listen(alice, subject)  # alice's password and permissions are as they were
        assert not alice.errors


async def test_a_log_read_survives_its_consumer_being_recreated(tenants: Secured) -> None:
    """nats-py recreates an ordered consumer (after a gap or missed heartbeats) with the
    config it was made with; Shoal's named ones get a new name each time, or the server
    would refuse the second consumer of the same name."""
    from nats.js.api import ConsumerConfig

    from shared.bus import _consumer_name, _rename_on_reset

    ns = f"{subjects.PREFIX}.ns.team-a.logs"
    async with raw(tenants, "orchestrator-1") as orch, raw(tenants, "alice") as alice:
        ojs = orch.nc.jetstream()
        await ojs.add_stream(name=subjects.LOGS_STREAM, subjects=[f"{subjects.PREFIX}.ns.*.logs.>"])
        await ojs.publish(f"{ns}.j.node-1.e.stdout", b"one\n")
        js = alice.nc.jetstream()
        name = _consumer_name()
        sub = await js.subscribe(
            f"{ns}.>",
            stream=subjects.LOGS_STREAM,
            ordered_consumer=True,
            config=ConsumerConfig(name=name),
        )
        _rename_on_reset(js, sub, subjects.LOGS_STREAM, name)
        assert (await sub.next_msg(timeout=5)).data == b"one\n"
        jsi = sub._sub._jsi  # type: ignore[attr-defined]
        await jsi.reset_ordered_consumer(2)
        await ojs.publish(f"{ns}.j.node-1.e.stdout", b"two\n")
        assert (await sub.next_msg(timeout=5)).data == b"two\n"

        async def names() -> set[str]:
            return {c.name for c in await ojs.consumers_info(subjects.LOGS_STREAM)}

        await eventually(lambda: names_are(names, {f"{name}-1"}), what="the old one deleted")
        assert not alice.errors, alice.errors
        await sub.unsubscribe()


async def names_are(names: Callable[[], Awaitable[set[str]]], wanted: set[str]) -> bool:
    return await names() == wanted


async def test_results_reach_only_their_namespace(tenants: Secured, tmp_path: Path) -> None:
    """A node puts its archive into its own bucket, the orchestrator copies it into the
    namespace's, alice (team-a) downloads it; bob (team-b) cannot read that bucket."""
    spec = {
        "Type": "batch",
        "Tasks": [
            {
                "Name": "main",
                "Engine": {"Type": "noop", "Params": {"Stdout": "hello results\n"}},
                "Publisher": {"Type": "nats"},
            }
        ],
    }
    orch = Orchestrator(await tenants.bus("orchestrator-1"), FAST)
    config = AgentConfig(name="node-1", heartbeat_interval=0.2, state_dir=tmp_path / "node-1")
    agent = ComputeAgent(await tenants.bus("node-1"), config)
    async with (
        orch,
        agent,
        await ShoalClient.connect(tenants.url, tenants.creds("alice")) as alice,
        raw(tenants, "bob") as bob,
    ):
        await agent.wait_registered(10)
        job_id = await alice.submit(spec)
        view = await alice.wait(job_id, timeout=30)
        assert view.state == "Completed", view
        folders = await alice.results(job_id, tmp_path / "results")
        assert len(folders) == 1
        assert b"hello results" in (folders[0] / "stdout").read_bytes()
        subject = "$JS.API.STREAM.MSG.GET.OBJ_shoal-results-ns-team-a"
        await bob.nc.publish(subject, b'{"seq": 1}')
        assert await bob.refused("Publish", subject), bob.errors
