"""Attacker: alice having the server or the orchestrator send for her what she may not send.

NATS checks no permission on a consumer's deliver subject nor on a request's reply subject
(nats-io/nats-server#8274). alice may read her own namespace's log lines, whose content her
job chooses: she asks JetStream to deliver them to team-b's API, or to node-1's commands, and
asks the orchestrator to answer her on node-1's command subject. Shoal's receivers take only
what a client published, and answer only inboxes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from shared import subjects, wire
from shared.bus import Message
from shared.client import ShoalClient
from tests.conftest import eventually
from tests.e2e.test_security import Raw, Secured, listen, nothing_arrives, raw, running, tenants

__all__ = ["tenants"]  # the fixture, imported for pytest

NS = f"{subjects.PREFIX}.ns"
LOGS = subjects.LOGS_STREAM
LONG = {  # runs on node-1 until stopped
    "Type": "batch",
    "Tasks": [{"Name": "main", "Engine": {"Type": "noop", "Params": {"Sleep": 600}}}],
}


async def deliver_alices_lines_to(alice: Raw, target: str, name: str) -> None:
    """A push consumer on alice's own lines (allowed) whose deliver subject is `target`."""
    config = {
        "name": name,
        "deliver_subject": target,
        "ack_policy": "none",
        "deliver_policy": "all",
        "filter_subject": f"{NS}.team-a.logs.>",
    }
    subject = f"$JS.API.CONSUMER.CREATE.{LOGS}.{name}.{NS}.team-a.logs.>"
    body = json.dumps({"stream_name": LOGS, "config": config}).encode()
    answer = json.loads((await alice.nc.request(subject, body, timeout=5)).data)
    assert "error" not in answer, answer  # NATS lets her: the receivers must not


async def test_logs_delivered_to_another_namespaces_api_do_nothing(
    tenants: Secured, tmp_path: Path
) -> None:
    async with (
        running(tenants, tmp_path, "node-1"),
        raw(tenants, "orchestrator-1") as witness,
        raw(tenants, "alice") as alice,
        await ShoalClient.connect(tenants.url, tenants.creds("bob")) as bob,
    ):
        job_id = await bob.submit(LONG)
        # alice's job printed a stop request for bob's job; a node stored it as her log line.
        forged = wire.encode(wire.StopRequest(job_id=job_id, reason="forged by alice"))
        await witness.nc.jetstream().publish(f"{NS}.team-a.logs.j-a.node-1.e-a.stdout", forged)
        target = f"{NS}.team-b.api.job.stop"
        heard = await listen(witness, target)
        await deliver_alices_lines_to(alice, target, "to-team-b")
        async with asyncio.timeout(5):
            assert await heard.get()  # the server did deliver it to team-b's API subject
        for _ in range(3):  # the orchestrators have had their chance to act on it
            view = await bob.describe(job_id)
            assert view.state in ("Pending", "Running"), view
        assert (await bob.stop(job_id)).state == "Stopped"  # bob still can


async def test_logs_delivered_to_a_node_are_not_commands(tenants: Secured) -> None:
    node1 = await tenants.bus("node-1")
    commands: list[Message] = []

    async def handle(msg: Message) -> None:
        commands.append(msg)

    async with raw(tenants, "orchestrator-1") as witness, raw(tenants, "alice") as alice:
        js = witness.nc.jetstream()
        await js.add_stream(name=LOGS, subjects=[f"{NS}.*.logs.>"])
        cancel = {"type": "cancel", "ExecutionID": "e-of-bob", "Reason": "forged"}
        await js.publish(f"{NS}.team-a.logs.j-a.node-1.e-a.stdout", json.dumps(cancel).encode())
        store = await js.create_object_store("shoal-results-ns-team-a")
        await store.put("j-a/e-a.tar.gz", json.dumps(cancel).encode())
        for kind in ("cmd", "bid"):
            await node1.subscribe(f"{subjects.PREFIX}.compute.node-1.{kind}", handle)
        heard = await listen(witness, f"{subjects.PREFIX}.compute.node-1.>")
        await deliver_alices_lines_to(alice, subjects.compute_cmd("node-1"), "to-node-1")
        # and JetStream's answers to her reads (her results, her stream), on node-1's bids
        for api, body in (
            ("$JS.API.STREAM.MSG.GET.OBJ_shoal-results-ns-team-a", {"seq": 1}),
            (f"$JS.API.STREAM.INFO.{LOGS}", {}),
        ):
            await alice.nc.publish(
                api, json.dumps(body).encode(), reply=subjects.compute_bid("node-1")
            )
        got = []
        async with asyncio.timeout(5):
            while len(got) < 3:
                got.append(await heard.get())  # all reached node-1's subjects ...
        await node1.flush()
        await witness.nc.flush()
        assert commands == []  # ... and neither reached its handlers
        # A command published by a client (the orchestrator) still does.
        inbox = witness.nc.new_inbox()
        await witness.nc.publish(subjects.compute_cmd("node-1"), b"{}", reply=inbox)
        await eventually(lambda: len(commands) == 1, what="the orchestrator's command handled")
        assert commands[0].reply == inbox


async def test_the_orchestrator_answers_only_inboxes(tenants: Secured, tmp_path: Path) -> None:
    async with (
        running(tenants, tmp_path),
        raw(tenants, "orchestrator-1") as witness,
        raw(tenants, "alice") as alice,
    ):
        heard = await listen(witness, f"{subjects.PREFIX}.compute.node-1.>")
        request = wire.encode(wire.ListRequest(limit=1))
        subject = f"{NS}.team-a.api.job.list"
        await alice.nc.publish(subject, request, reply=subjects.compute_cmd("node-1"))
        # Asked from her inbox, the same request is answered.
        assert (await alice.nc.request(subject, request, timeout=5)).data
        assert await nothing_arrives(heard, within=0.5)


async def test_logs_delivered_to_another_namespaces_state_are_not_records(
    tenants: Secured,
) -> None:
    bob = await tenants.bus("bob")
    async with raw(tenants, "orchestrator-1") as witness, raw(tenants, "alice") as alice:
        js = witness.nc.jetstream()
        await js.add_stream(name=LOGS, subjects=[f"{NS}.*.logs.>"])
        await js.publish(f"{NS}.team-a.logs.j-a.node-1.e-a.stdout", b'{"State": "Completed"}')
        target = f"{NS}.team-b.state.j-bob.job"
        following = await bob.subscription(f"{NS}.team-b.state.j-bob.>")
        heard = await listen(witness, target)
        await deliver_alices_lines_to(alice, target, "to-team-b-state")
        async with asyncio.timeout(5):
            assert await heard.get()  # delivered to the subject bob follows ...
        await witness.nc.publish(target, b"a record")  # (the control, after it)
        msg = await following.next(timeout=5)
        assert msg is not None and msg.data == b"a record"  # ... never handed to bob
