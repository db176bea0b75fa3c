"""Storage that fills up: the logs stream and the results object stores drop their oldest
content at their limit, and Shoal goes on accepting and completing jobs."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from shared import results, subjects
from shared.bus import Bus
from shared.errors import NotFound, ShoalError
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.stack import FAST, stack
from tests.integration.test_retention import own_buckets, results_job

LOGS_LIMIT = 32 * 1024
RESULTS_LIMIT = 64 * 1024
BUCKET = results.namespace_bucket("default")


def noisy(name: str) -> dict[str, Any]:
    """A job writing about 4 KiB of incompressible lines, kept as its result archive too."""
    lines = [base64.b64encode(os.urandom(75)).decode() for _ in range(40)]
    return results_job(name, "\n".join(lines) + "\n")


async def stream_info(bus: Bus, stream: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(await bus.request(f"$JS.API.STREAM.INFO.{stream}", b""))
    return info


async def limited(bus: Bus) -> bool:
    config = (await stream_info(bus, f"OBJ_{BUCKET}")).get("config", {})
    return config.get("max_bytes") == RESULTS_LIMIT and config.get("discard") == "old"


async def test_full_logs_and_results_drop_the_oldest_and_jobs_still_complete(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    config = dataclasses.replace(
        FAST,
        logs_max_bytes=LOGS_LIMIT,
        results_max_bytes=RESULTS_LIMIT,
        storage_check_every=0.2,
        job_retention=0.0,
    )
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        await s.stop_orchestrator()
        await s.start_orchestrator(config)
        own_buckets(s)
        logs = await stream_info(client.bus, subjects.LOGS_STREAM)
        assert logs["config"]["max_bytes"] == LOGS_LIMIT
        assert logs["config"]["discard"] == "old"
        first = await client.submit(noisy("first"))
        assert (await client.wait(first, timeout=30)).state == "Completed"
        # The namespace's bucket, made by the first result, gets its limit from the leader.
        await eventually(lambda: limited(client.bus), what="the results store limited")
        ids = []
        for wave in range(4):  # 40 jobs: about 160 KiB of logs and of archives
            ids += await asyncio.gather(
                *(client.submit(noisy(f"fill-{wave}-{i}")) for i in range(10))
            )
        views = await asyncio.gather(*(client.wait(j, timeout=60) for j in ids))
        assert all(v.state == "Completed" for v in views), [v.state_message for v in views]
        for stream in (subjects.LOGS_STREAM, f"OBJ_{BUCKET}"):
            held = (await stream_info(client.bus, stream))["state"]["bytes"]
            assert held <= (LOGS_LIMIT if stream == subjects.LOGS_STREAM else RESULTS_LIMIT)
        # The newest archive is whole; the first job's is gone (or cut: its oldest chunks).
        last = views[-1]
        name = results.archive_name(last.id, last.executions[0].id)
        assert await results.fetch_result(client.bus, "default", name, tmp_path / "last.tgz")
        first_view = await client.describe(first)
        first_name = results.archive_name(first, first_view.executions[0].id)
        try:
            await results.fetch_result(client.bus, "default", first_name, tmp_path / "a.tgz")
            raise AssertionError("the oldest archive survived a full store")
        except (NotFound, ShoalError):
            pass
        # The first job's log lines went first; the newest job's are there.
        assert [line async for line in client.logs(last.id)]
        # Still taking and completing jobs with both stores full.
        after = await client.submit(noisy("after"))
        assert (await client.wait(after, timeout=30)).state == "Completed"
