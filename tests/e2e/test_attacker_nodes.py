"""Attacker: node-2 writing node-1's log lines and result objects, or speaking for it."""

from __future__ import annotations

import json

import nats.errors
import nats.js.api as jsapi
import pytest

from shared import subjects
from tests.e2e.test_security import Raw, Secured, raw, tenants

__all__ = ["tenants"]  # the fixture, imported for pytest

NS = f"{subjects.PREFIX}.ns"
LOGS = subjects.LOGS_STREAM
NODE1_RESULTS = "shoal-results-node-node-1"
NODE2_RESULTS = "shoal-results-node-node-2"


async def refused_request(conn: Raw, subject: str, body: bytes = b"{}") -> bool:
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await conn.nc.request(subject, body, timeout=0.5)
    return await conn.refused("Publish", subject)


async def stored_on(orch: Raw, stream: str, subject: str) -> int:
    info = await orch.nc.jetstream().stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_node2_cannot_write_node1_log_lines(tenants: Secured) -> None:
    async with raw(tenants, "orchestrator-1") as orch, raw(tenants, "node-2") as node2:
        js = orch.nc.jetstream()
        await js.add_stream(name=LOGS, subjects=[f"{NS}.*.logs.>"])
        forged = (
            f"{NS}.default.logs.j-1.node-1.e-1.stdout",
            f"{NS}.team-a.logs.j-2.node-1.e-2.stderr",
            f"{NS}.team-a.logs.j-2.node-1",
        )
        for subject in forged:
            await node2.nc.publish(subject, b"forged line\n")
            assert await node2.refused("Publish", subject), (subject, node2.errors)
        # JetStream publishes (with an ack) are refused the same way.
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await node2.nc.jetstream().publish(forged[0], b"forged line\n", timeout=0.5)
        assert await stored_on(orch, LOGS, f"{NS}.*.logs.*.node-1.>") == 0
        # The control: node-2 writes lines of its own executions.
        ack = await node2.nc.jetstream().publish(
            f"{NS}.team-a.logs.j-2.node-2.e-3.stdout", b"honest line\n", timeout=5
        )
        assert ack.stream == LOGS
        assert await stored_on(orch, LOGS, f"{NS}.*.logs.*.node-2.>") == 1


async def test_node2_cannot_write_or_read_node1_results(tenants: Secured) -> None:
    async with (
        raw(tenants, "orchestrator-1") as orch,
        raw(tenants, "node-1") as node1,
        raw(tenants, "node-2") as node2,
    ):
        # node-1 makes and fills its own bucket, as its NATS publisher does.
        mine = await node1.nc.jetstream().create_object_store(NODE1_RESULTS)
        await mine.put("j-1/e-1.tar.gz", b"node-1's archive")
        await mine.put("j-1/e-1.tar.gz", b"node-1's archive, again")  # a retried upload
        assert not node1.errors, node1.errors
        stream = f"OBJ_{NODE1_RESULTS}"
        for subject in (
            f"$O.{NODE1_RESULTS}.M.ai0xLzEtMS50YXIuZ3o=",
            f"$O.{NODE1_RESULTS}.C.forged",
            "$O.shoal-results-ns-default.M.x",  # nor the namespaces' buckets
            "$O.shoal-results.M.x",  # nor the shared bucket of old
        ):
            await node2.nc.publish(subject, b"forged")
            assert await node2.refused("Publish", subject), (subject, node2.errors)
        for subject in (
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.$O.{NODE1_RESULTS}.M.x",
            f"$JS.API.STREAM.PURGE.{stream}",
            f"$JS.API.STREAM.DELETE.{stream}",
            f"$JS.API.STREAM.UPDATE.{stream}",
            f"$JS.API.STREAM.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}",
        ):
            assert await refused_request(node2, subject), (subject, node2.errors)
        with pytest.raises(Exception):  # noqa: B017 - whichever way nats-py reports it
            await node2.nc.jetstream().object_store(NODE1_RESULTS)
        # node-1's object is untouched.
        check = await orch.nc.jetstream().object_store(NODE1_RESULTS)
        assert (await check.get("j-1/e-1.tar.gz")).data == b"node-1's archive, again"
        info = await orch.nc.jetstream().stream_info(stream)
        assert info.state.messages == 2  # one chunk, one metadata: the replaced ones purged
        # The control: node-2 makes and writes its own bucket.
        own = await node2.nc.jetstream().create_object_store(
            NODE2_RESULTS, config=jsapi.ObjectStoreConfig(bucket=NODE2_RESULTS)
        )
        await own.put("j-2/e-2.tar.gz", b"node-2's archive")
        assert (await own.get_info("j-2/e-2.tar.gz")).size == len(b"node-2's archive")


async def test_node2_cannot_speak_for_node1(tenants: Secured) -> None:
    async with raw(tenants, "node-2") as node2:
        for subject in (
            subjects.node_hello("node-1"),
            subjects.node_heartbeat("node-1"),
            subjects.node_update("node-1"),
        ):
            await node2.nc.publish(subject, json.dumps({"NodeID": "node-1"}).encode())
            assert await node2.refused("Publish", subject), node2.errors
        for subject in (subjects.compute_cmd("node-1"), subjects.compute_bid("node-1")):
            await node2.nc.subscribe(subject)
            assert await node2.refused("Subscription", subject), node2.errors
