"""Result archives go from the node's own bucket to the namespace's, through the orchestrator."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import msgspec
import pytest

from compute.agent import ComputeAgent
from compute.publishers import NatsPublisher
from orchestrator import results_handoff
from orchestrator.results_handoff import QUICK, CopyPending, ResultsHandoff, copy_result
from shared import results, subjects, wire
from shared.bus import Bus
from shared.errors import Unavailable
from shared.natsserver import EmbeddedNats
from shared.spec import spec_from_data
from tests.conftest import eventually
from tests.integration.stack import stack

NATS_JOB = {
    "Name": "handoff",
    "Type": "batch",
    "Tasks": [
        {
            "Name": "main",
            "Engine": {"Type": "noop", "Params": {"Stdout": "hello results\n"}},
            "Publisher": {"Type": "nats"},
        }
    ],
}


def _own_bucket(agent: ComputeAgent) -> None:
    """What compute/agent.py does once it passes its node id (`NatsPublisher(bus, node_id)`)."""
    agent.publishers["nats"] = NatsPublisher(agent.bus, agent.node_id)


async def _stream_messages(bus: Bus, bucket: str) -> int:
    raw = await bus.request(f"$JS.API.STREAM.INFO.OBJ_{bucket}", b"")
    return int(json.loads(raw).get("state", {}).get("messages", 0))


async def _streams(bus: Bus) -> set[str]:
    raw = await bus.request("$JS.API.STREAM.NAMES", b"{}")
    return set(json.loads(raw).get("streams") or [])


def _order(job_id: str, execution_id: str) -> wire.ExecutionOrder:
    return wire.ExecutionOrder(execution_id=execution_id, job_id=job_id, job_type="batch")


def _record(job_id: str, execution_id: str, node_id: str) -> wire.ExecutionRecord:
    return wire.ExecutionRecord(
        id=execution_id, job_id=job_id, namespace="default", node_id=node_id
    )


def _completed(job_id: str, execution_id: str, node_id: str) -> wire.ExecutionUpdate:
    name = results.archive_name(job_id, execution_id)
    return wire.ExecutionUpdate(
        execution_id=execution_id,
        job_id=job_id,
        node_id=node_id,
        state="completed",
        exit_code=0,
        result=wire.ResultRef(publisher="nats", location=name, size=1),
    )


async def _put(
    bus: Bus, tmp: Path, node_id: str, job_id: str, execution_id: str, data: bytes
) -> Path:
    archive = tmp / node_id / job_id / execution_id / results.ARCHIVE
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(data)
    await NatsPublisher(bus, node_id).publish(
        archive, _order(job_id, execution_id), spec_from_data(NATS_JOB)
    )
    return archive


async def test_a_jobs_results_land_in_its_namespace_bucket(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        _own_bucket(s.agents["node-0"])
        job_id = await client.submit(NATS_JOB)
        view = await client.wait(job_id, timeout=20)
        assert view.state == "Completed", view
        (execution,) = view.executions
        name = results.archive_name(job_id, execution.id)
        assert execution.result is not None and execution.result.location == name
        bus = client.bus
        # Read as `shoal job get` does, from the namespace's bucket only.
        archive = tmp_path / "got" / results.ARCHIVE
        archive.parent.mkdir()
        size = await results.fetch_result(bus, "default", name, archive)
        assert size == execution.result.size == archive.stat().st_size
        results.unpack(archive, tmp_path / "got")
        assert (tmp_path / "got" / "stdout").read_text() == "hello results\n"
        # The copy is an ordinary object: any object store client reads it too.
        store = await bus.object_store(results.namespace_bucket("default"))
        await store.get_into(name, str(tmp_path / "nats-py.tar.gz"))
        assert (tmp_path / "nats-py.tar.gz").read_bytes() == archive.read_bytes()
        # The node's copy is gone (staging), and nothing went to the shared bucket of old.
        assert await results.object_info(bus, results.node_bucket("node-0"), name) is None
        assert await results.object_info(bus, results.LEGACY_BUCKET, name) is None


async def test_a_report_whose_copy_is_under_way_is_applied_when_redelivered(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The applier does not wait for a copy: it asks for the report again (here at once)."""
    monkeypatch.setattr(results_handoff, "QUICK", 0.0)
    pending = 0
    settle = ResultsHandoff.settle

    async def counting(
        self: ResultsHandoff, record: wire.ExecutionRecord, update: wire.ExecutionUpdate
    ) -> wire.ExecutionUpdate:
        nonlocal pending
        try:
            return await settle(self, record, update)
        except CopyPending:
            pending += 1
            raise

    monkeypatch.setattr(ResultsHandoff, "settle", counting)
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        _own_bucket(s.agents["node-0"])
        job_id = await client.submit(NATS_JOB)
        view = await client.wait(job_id, timeout=20)
        assert view.state == "Completed", view
        (execution,) = view.executions
        name = results.archive_name(job_id, execution.id)
        assert await results.object_info(client.bus, results.namespace_bucket("default"), name)
        assert pending >= 1  # applied on a redelivery, not while the copy ran


async def test_a_redelivered_completed_report_copies_once(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        _own_bucket(s.agents["node-0"])
        job_id = await client.submit(NATS_JOB)
        view = await client.wait(job_id, timeout=20)
        (execution,) = view.executions
        assert execution.result is not None
        bucket = results.namespace_bucket("default")
        stored = await _stream_messages(client.bus, bucket)
        # The node's report again, as a redelivery or a second orchestrator would see it.
        again = _completed(job_id, execution.id, "node-0")
        await client.bus.js_publish(subjects.node_update("node-0"), wire.encode(again))

        async def applied() -> bool:
            raw = await client.bus.request(
                f"$JS.API.CONSUMER.INFO.{subjects.UPDATES_STREAM}.shoal-updates", b""
            )
            info = json.loads(raw)
            return bool(info["num_pending"] == 0 and info["num_ack_pending"] == 0)

        await eventually(applied, what="the repeated report acked")
        after = await client.describe(job_id)
        assert after.executions[0].compute_state == "completed"
        assert after.executions[0].result == execution.result
        assert await _stream_messages(client.bus, bucket) == stored
        # The copy itself, asked again with the node's copy gone: the one already made.
        name = results.archive_name(job_id, execution.id)
        again_copied = await copy_result(client.bus, "node-0", "default", name)
        assert again_copied is not None and again_copied.size == execution.result.size
        assert await _stream_messages(client.bus, bucket) == stored


async def test_a_copy_of_the_same_archive_is_skipped_and_the_staging_copy_removed(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    bus = await Bus.connect(nats_server.url)
    try:
        await _put(bus, tmp_path, "node-a", "j1", "e1", b"same bytes" * 1000)
        first = await copy_result(bus, "node-a", "default", results.archive_name("j1", "e1"))
        bucket = results.namespace_bucket("default")
        stored = await _stream_messages(bus, bucket)
        # The node published it again (it restarted before its report was acked).
        await _put(bus, tmp_path, "node-a", "j1", "e1", b"same bytes" * 1000)
        second = await copy_result(bus, "node-a", "default", results.archive_name("j1", "e1"))
        assert first is not None and second is not None
        assert second.digest == first.digest and second.nuid == first.nuid
        assert await _stream_messages(bus, bucket) == stored
        name = results.archive_name("j1", "e1")
        assert await results.object_info(bus, results.node_bucket("node-a"), name) is None
    finally:
        await bus.close()


async def test_a_node_writes_only_its_own_bucket(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    bus = await Bus.connect(nats_server.url)
    try:
        await _put(bus, tmp_path, "node-a", "j1", "e1", b"archive")
        streams = await _streams(bus)
        assert "OBJ_shoal-results-node-node-a" in streams
        assert not {n for n in streams if n.startswith("OBJ_") and not n.endswith("node-a")}
        name = results.archive_name("j1", "e1")
        stored = await results.object_info(bus, results.node_bucket("node-a"), name)
        assert stored is not None and stored.size == len(b"archive")
    finally:
        await bus.close()


async def test_a_report_naming_another_executions_object_is_refused(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    bus = await Bus.connect(nats_server.url)
    handoff = ResultsHandoff(bus)
    try:
        await _put(bus, tmp_path, "node-a", "j1", "victim", b"theirs")
        forged = msgspec.structs.replace(
            _completed("j1", "mine", "node-a"),
            result=wire.ResultRef(publisher="nats", location=results.archive_name("j1", "victim")),
        )
        applied = await handoff.settle(_record("j1", "mine", "node-a"), forged)
        assert applied.state == "failed" and "refused" in applied.error
        assert applied.result is None
        assert results.namespace_bucket("default") not in {
            n.removeprefix("OBJ_") for n in await _streams(bus)
        }
    finally:
        await handoff.close()
        await bus.close()


async def test_results_gone_from_the_node_fail_the_execution_saying_so(
    nats_server: EmbeddedNats,
) -> None:
    bus = await Bus.connect(nats_server.url)
    handoff = ResultsHandoff(bus)
    try:
        update = _completed("j1", "e1", "node-a")
        applied = await handoff.settle(_record("j1", "e1", "node-a"), update)
        assert applied.state == "failed" and applied.result is None
        assert "shoal-results-node-node-a" in applied.error
        assert "lost before they were copied" in applied.error
    finally:
        await handoff.close()
        await bus.close()


async def test_a_damaged_archive_fails_the_execution_saying_so(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    bus = await Bus.connect(nats_server.url)
    handoff = ResultsHandoff(bus)
    try:
        await _put(bus, tmp_path, "node-a", "j1", "e1", b"archive")
        bucket, name = results.node_bucket("node-a"), results.archive_name("j1", "e1")
        stored = await results.object_info(bus, bucket, name)
        assert stored is not None
        meta = json.loads(stored.raw)
        meta["digest"] = results.digest_of(hashlib.sha256(b"something else").digest())
        await bus.js_publish(results.meta_subject(bucket, name), json.dumps(meta).encode())
        update = _completed("j1", "e1", "node-a")
        applied = await handoff.settle(_record("j1", "e1", "node-a"), update)
        assert applied.state == "failed" and applied.result is None
        assert "damaged" in applied.error, applied.error
        assert await results.object_info(bus, results.namespace_bucket("default"), name) is None
    finally:
        await handoff.close()
        await bus.close()


async def test_results_of_a_report_not_applied_are_deleted_from_the_node_bucket(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """A report on an execution stopped meanwhile: nobody copies its archive."""
    bus = await Bus.connect(nats_server.url)
    handoff = ResultsHandoff(bus)
    try:
        await _put(bus, tmp_path, "node-a", "j1", "e1", b"archive")
        await _put(bus, tmp_path, "node-a", "j1", "e2", b"another")
        handoff.discard(_record("j1", "e1", "node-a"), _completed("j1", "e1", "node-a"))
        bucket = results.node_bucket("node-a")

        async def gone() -> bool:
            name = results.archive_name("j1", "e1")
            return await results.object_info(bus, bucket, name) is None

        await eventually(gone, what="the staged archive deleted")
        assert await results.object_info(bus, bucket, results.archive_name("j1", "e2"))
        assert await _stream_messages(bus, bucket) == 2  # e2's chunk and metadata
    finally:
        await handoff.close()
        await bus.close()


async def test_a_copy_failed_by_nats_is_tried_again(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    bus = await Bus.connect(nats_server.url)
    handoff = ResultsHandoff(bus)
    try:
        await _put(bus, tmp_path, "node-a", "j1", "e1", b"archive")
        record, update = _record("j1", "e1", "node-a"), _completed("j1", "e1", "node-a")
        await nats_server.stop()

        async def settled() -> wire.ExecutionUpdate | None:
            try:
                return await handoff.settle(record, update)
            except CopyPending:
                return None

        with pytest.raises(Unavailable):  # the applier naks the report: it comes back
            await eventually(settled, what="the copy failing")
        await nats_server.start()  # the same port and store
        applied = await eventually(settled, what="the copy tried again")
        assert applied.state == "completed" and applied.result is not None
        name = results.archive_name("j1", "e1")
        assert await results.object_info(bus, results.namespace_bucket("default"), name)
    finally:
        await handoff.close()
        await bus.close()


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_large_archive_is_copied_in_bounded_memory(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    size = 20 * 1024 * 1024
    bus = await Bus.connect(nats_server.url)
    handoff = ResultsHandoff(bus)
    try:
        data = os.urandom(size)
        digest = hashlib.sha256(data).digest()
        archive = await _put(bus, tmp_path, "node-a", "big", "e1", data)
        del data
        archive.unlink()
        name = results.archive_name("big", "e1")
        record, update = _record("big", "e1", "node-a"), _completed("big", "e1", "node-a")
        before = peak = _rss()
        copying = True

        async def sample() -> None:
            nonlocal peak
            while copying:
                peak = max(peak, _rss())
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        applied: wire.ExecutionUpdate | None = None
        while applied is None:  # as the applier does: a redelivered report until copied
            try:
                applied = await handoff.settle(record, update)
            except CopyPending:
                await asyncio.sleep(QUICK)
        copying = False
        await sampler
        after = _rss()
        assert applied.state == "completed" and applied.result is not None
        assert applied.result.size == size
        assert not handoff._copies  # nothing kept once settled
        print(f"RSS before {before >> 10} KiB, peak {peak >> 10} KiB, after {after >> 10} KiB")
        assert peak - before < size // 5, (before, peak, after)
        assert after - before < size // 5, (before, peak, after)
        stored = await results.object_info(bus, results.namespace_bucket("default"), name)
        assert stored is not None and stored.digest == results.digest_of(digest)
    finally:
        await handoff.close()
        await bus.close()
