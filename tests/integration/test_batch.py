"""Batch and ops jobs end to end on a real nats-server with real agents (noop and wasm)."""

from __future__ import annotations

from pathlib import Path

from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.stack import stack

NOOP = """
Type: batch
Count: {count}
Tasks:
  - Engine:
      Type: noop
      Params:
        Stdout: "hello from noop\\n"
        ExitCode: {code}
"""


async def test_noop_batch_completes(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(NOOP.format(count=2, code=0))
        view = await client.wait(job_id, timeout=20)
        assert view.state == "Completed", view
        assert len(view.executions) == 2
        assert {e.compute_state for e in view.executions} == {"completed"}
        out = b"".join([line.data async for line in client.logs(job_id)])
        assert out.count(b"hello from noop") == 2


async def test_output_is_shipped_while_the_task_runs(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Tailing starts one interval into a task (a shorter one ships once, at its end)."""
    spec = {
        "Type": "batch",
        "Tasks": [{"Engine": {"Type": "noop", "Params": {"Stdout": "early\n", "Sleep": 30}}}],
    }
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        job_id = await client.submit(spec)

        async def shipped() -> bool:
            return b"early" in b"".join([line.data async for line in client.logs(job_id)])

        await eventually(shipped, what="output shipped before the task ends")
        assert s.agents["node-0"].running_count == 1  # still running
        await client.stop(job_id)
