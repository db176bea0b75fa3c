"""Run jobs from Python with ShoalClient: start `shoal devstack`, then
`.venv/bin/python examples/python_client.py` (or pass a NATS URL).

- `run()` submits and waits: it picks the job id, listens to the job's stored state (which
  nats-server republishes on `shoal.v1.state.<job-id>.>`), then submits, so waiting costs no
  extra request and ends as soon as the job's end is stored.
- `submit_full(job_id=...)` makes a submit safe to resend: the same id and spec find the job
  the first attempt created instead of making a second one.
"""

from __future__ import annotations

import asyncio
import sys

from shared.client import ShoalClient, new_job_id
from shared.errors import Unavailable

HELLO = {
    "Type": "batch",
    "Count": 2,
    "Tasks": [{"Engine": {"Type": "noop", "Params": {"Stdout": "hello from a partition\n"}}}],
}


async def main(url: str = "nats://127.0.0.1:4222") -> None:
    async with await ShoalClient.connect(url) as client:
        view = await client.run(HELLO, timeout=60)
        print(f"{view.id}: {view.state} on {sorted(e.node_id for e in view.executions)}")
        async for line in client.logs(view.id):
            print(f"  {line.execution_id[:10]} {line.stream}: {line.data.decode().rstrip()}")

        # A submit whose reply was lost (a timeout, a NATS failover) can be sent again as is.
        job_id = new_job_id()
        for attempt in range(3):
            try:
                reply = await client.submit_full(HELLO, job_id=job_id)
                break
            except Unavailable:
                await asyncio.sleep(0.5 * (attempt + 1))
        else:
            raise SystemExit("no orchestrator answered")
        again = await client.submit_full(HELLO, job_id=job_id)  # as a retry would
        print(f"{reply.job_id}: created={reply.changed}; sent again: created={again.changed}")
        print(f"{job_id}: {(await client.wait(job_id, timeout=60)).state}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:2]))
