"""Fuzzing every API and node subject with malformed, wrong-typed, oversized and replayed
messages: the orchestrator answers with an error or ignores them, and keeps its state intact."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Any

from shared import subjects, wire
from shared.bus import Bus
from shared.errors import ShoalError
from shared.natsserver import EmbeddedNats
from tests.integration.stack import stack

SEED = 20261122
CASES = 150

# Field names that appear on the wire, so that random objects look almost right.
KEYS = [
    "Spec",
    "SpecText",
    "Variables",
    "Force",
    "JobID",
    "Namespace",
    "Version",
    "Limit",
    "After",
    "States",
    "NodeID",
    "Reason",
    "Node",
    "ID",
    "Labels",
    "Engines",
    "Capacity",
    "Running",
    "BootID",
    "Seq",
    "Free",
    "ExecutionID",
    "State",
    "ExitCode",
    "Error",
    "Retryable",
    "Result",
    "At",
    "Type",
    "Tasks",
    "Count",
    "CPUMillis",
    "MemoryBytes",
]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**63) - 1, 3.5, float("1e308")])
    if kind == 3:
        return rng.choice(
            [
                "",
                "x",
                "node-0",
                "j-",
                "completed",
                "running",
                "a" * 300,
                "\u0000",
                "ü",
                "../../etc/passwd",
                "shoal.v1.>",
            ]
        )
    if kind in (4, 5):
        return "".join(rng.choice('abc.*> \n{}[]"\\') for _ in range(rng.randrange(12)))
    if kind in (6, 7):
        return {rng.choice(KEYS): _value(rng, depth + 1) for _ in range(rng.randrange(6))}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _payload(rng: random.Random, valid: list[bytes]) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if kind == 1 and valid:
        raw = bytearray(rng.choice(valid))  # a real message with a few bytes flipped
        for _ in range(rng.randrange(1, 4)):
            if raw:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if kind == 2 and valid:
        return rng.choice(valid)  # replayed verbatim
    if kind == 3:
        return b"{" * rng.randrange(1, 5000)  # deep nesting
    if kind == 4:
        return json.dumps({"SpecText": "Type: batch\n" + "# x\n" * 60_000}).encode()
    return json.dumps(_value(rng), allow_nan=True).encode()


async def test_every_subject_survives_fuzzed_messages(
    nats_server: EmbeddedNats, tmp_path: Path, bus: Bus
) -> None:
    rng = random.Random(SEED)
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        job = await client.submit(
            {"Name": "baseline", "Type": "batch", "Tasks": [{"Engine": {"Type": "noop"}}]}
        )
        before = await client.wait(job, timeout=20)
        assert before.state == "Completed"
        valid = [
            wire.encode(wire.JobRef(job_id=job)),
            wire.encode(wire.StopRequest(job_id=job)),
            wire.encode(wire.Hello(node=wire.NodeInfo(id="node-0", engines=["noop"]))),
            wire.encode(wire.Heartbeat(node_id="node-0", seq=1, free=wire.Capacity())),
            wire.encode(
                wire.ExecutionUpdate(
                    execution_id=before.executions[0].id,
                    job_id=job,
                    node_id="node-0",
                    state="failed",
                )
            ),
        ]
        verbs = [v for v in subjects.API_VERBS]
        for _ in range(CASES):
            data = _payload(rng, valid)
            target = rng.randrange(4)
            if target == 0:  # request-reply API: always an answer, never a hang
                raw = await bus.request(subjects.api(rng.choice(verbs)), data, timeout=10)
                reply = wire.decode(raw, wire.ApiReply)
                assert reply.ok or (reply.error is not None and reply.error.message), reply
            elif target == 1:  # registration under a name that is not a running agent
                raw = await bus.request(subjects.node_hello("fuzz-node"), data, timeout=10)
                wire.decode(raw, wire.ApiReply)
            elif target == 2:
                await bus.publish(subjects.node_heartbeat(rng.choice(["node-0", "x"])), data)
            else:
                with contextlib.suppress(ShoalError):  # e.g. refused for its size
                    await bus.js_publish(subjects.node_update(rng.choice(["node-0", "x"])), data)
        # State intact: the finished job is still Completed with its one completed execution,
        # and a new job still runs.
        after = await client.describe(job)
        assert after.state == "Completed", after
        assert [e.compute_state for e in after.executions] == ["completed"], after
        again = await client.submit(
            {"Name": "after-fuzz", "Type": "batch", "Tasks": [{"Engine": {"Type": "noop"}}]}
        )
        assert (await client.wait(again, timeout=30)).state == "Completed"
        nodes = {n.id: n for n in await client.nodes()}
        assert nodes["node-0"].connection == "CONNECTED"
