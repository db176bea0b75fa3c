"""Tenants at the API: a namespace's subjects answer only about its own jobs, a spec cannot be
slipped into another namespace, and an execution's log lines come only from its own node.

NATS permissions (who may publish or subscribe where) are tested against a secured server in
tests/e2e; these tests hold the orchestrator's side of the promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import subjects, wire
from shared.bus import Bus
from shared.client import ShoalClient
from shared.errors import InvalidSpec, NotFound
from shared.natsserver import EmbeddedNats
from tests.integration.helpers_jobs import noop_job
from tests.integration.stack import stack


async def _client(url: str, namespace: str) -> ShoalClient:
    return await ShoalClient.connect(url, namespace=namespace)


async def test_a_namespace_sees_and_controls_only_its_own_jobs(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1):
        alice = await _client(nats_server.url, "team-a")
        bob = await _client(nats_server.url, "team-b")
        admin = await ShoalClient.connect(nats_server.url)
        try:
            spec = noop_job("report", sleep=30)
            del spec["Name"]
            job_id = await alice.submit(spec)
            view = await alice.describe(job_id)
            assert view.namespace == "team-a"  # no Namespace in the spec: the subject's

            for ask in (
                lambda: bob.describe(job_id),
                lambda: bob.stop(job_id),
                lambda: bob.execution_page(job_id),
                lambda: bob.history(job_id),
                lambda: bob.versions(job_id),
                lambda: bob.rerun(job_id),
                lambda: bob.describe(job_id[:10]),  # nor by prefix
            ):
                with pytest.raises(NotFound, match="in namespace 'team-b'"):
                    await ask()
            assert await bob.jobs() == []
            assert [j.id for j in await alice.jobs()] == [job_id]
            # The cluster subject (an admin's) lists every namespace.
            assert [j.id for j in await admin.jobs(all_namespaces=True)] == [job_id]
            assert (await alice.describe(job_id)).state != "Stopped"
            stopped = await alice.stop(job_id)
            assert stopped.state == "Stopped"
        finally:
            for client in (alice, bob, admin):
                await client.close()


async def test_a_spec_naming_another_namespace_is_refused_on_this_ones_subject(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1):
        bob = await _client(nats_server.url, "team-b")
        try:
            text = "Type: batch\nNamespace: team-a\nTasks:\n  - Engine: {Type: noop}\n"
            with pytest.raises(InvalidSpec) as caught:
                await bob.submit(text)
            assert caught.value.problems[0].path == "Namespace"
            assert "'team-a' is not 'team-b'" in str(caught.value)
            assert await bob.jobs() == []
            # A body naming another namespace on this one's subject: refused, not answered.
            request = wire.ListRequest(namespace="team-a")
            raw = await bob.bus.request(
                subjects.ns_api("team-b", "job.list"), wire.encode(request), timeout=10
            )
            reply = wire.decode(raw, wire.ApiReply)
            assert not reply.ok and reply.error is not None and reply.error.code == "invalid"
        finally:
            await bob.close()


async def test_a_spec_naming_its_namespace_runs_there_from_any_client(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """A mapping or JobSpec with a Namespace goes to that namespace's subject (and run()
    waits for it there): what its user's permissions allow or refuse."""
    async with stack(nats_server.url, tmp_path, agents=1):
        client = await ShoalClient.connect(nats_server.url)
        try:
            spec = {**noop_job("nightly"), "Namespace": "team-a"}
            view = await client.run(spec, timeout=30)
            assert view.state == "Completed" and view.namespace == "team-a"
        finally:
            await client.close()


async def test_log_lines_count_only_from_the_node_the_execution_was_placed_on(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """A line published under another node's name for an execution (what a node's identity
    may do: publish under its own name) is not that execution's output."""
    async with stack(nats_server.url, tmp_path, agents=1):
        alice = await _client(nats_server.url, "team-a")
        forger = await Bus.connect(nats_server.url, name="node-evil")
        try:
            view = await alice.run(noop_job("honest", stdout="real output\n"), timeout=30)
            (execution,) = view.executions
            assert execution.node_id == "node-0"
            forged = subjects.logs("team-a", view.id, "node-evil", execution.id, "stdout")
            await forger.publish(forged, b"forged output\n")
            await forger.flush()
            lines = [line async for line in alice.logs(view.id)]
            text = b"".join(line.data for line in lines)
            assert text == b"real output\n", text
            one = [
                line
                async for line in alice.logs(view.id, execution_id=execution.id, node_id="node-0")
            ]
            assert b"".join(line.data for line in one) == b"real output\n"
        finally:
            await alice.close()
            await forger.close()
