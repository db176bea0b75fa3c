"""What an orchestrator keeps of a job that has ended: start `shoal devstack`, then
`.venv/bin/python examples/ended_jobs.py` (or pass a NATS URL).

About a second after a job's last execution ends, the leader settles it: every orchestrator
then holds only its record (state, times, executions counted by state) and reads its spec and
executions from KV when asked. `job list` shows the counts; `job describe` the executions.
`purge` removes the job and everything of it at once, as `--job-retention` does after a week.
"""

from __future__ import annotations

import asyncio
import sys
import time

from shared.client import ShoalClient
from shared.errors import NotFound
from shared.wire import JobView

THREE = {
    "Type": "batch",
    "Count": 3,
    "Tasks": [{"Engine": {"Type": "noop", "Params": {"Stdout": "done\n"}}}],
}


async def settled(client: ShoalClient, job_id: str, timeout: float = 10.0) -> JobView:
    """The job as `job list` shows it once the leader has settled it: counts, no executions."""
    deadline = time.monotonic() + timeout
    while True:
        listed = next(j for j in await client.jobs() if j.id == job_id)
        if listed.execution_counts or time.monotonic() > deadline:
            return listed
        await asyncio.sleep(0.1)


async def main(url: str = "nats://127.0.0.1:4222") -> None:
    async with await ShoalClient.connect(url) as client:
        view = await client.run(THREE, timeout=60)
        print(f"{view.id}: {view.state}")
        listed = await settled(client, view.id)
        print(f"job list:  counts {listed.execution_counts}, {len(listed.executions)} listed")
        described = await client.describe(view.id)
        nodes = sorted(e.node_id for e in described.executions)
        print(f"describe:  counts {described.execution_counts}, on {nodes}")
        await client.purge(view.id)
        try:
            await client.describe(view.id)
        except NotFound as exc:
            print(f"purged:    {exc}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
