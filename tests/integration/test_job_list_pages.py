"""job.list pages (newest first, `After` = the page before's `Next`), and the client reads every
page: a list of many jobs no longer has to fit one NATS message."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import api_reads
from shared import wire
from shared.errors import InvalidSpec
from shared.natsserver import EmbeddedNats
from tests.integration.stack import stack

SPEC = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop"}}]}


async def test_pages_follow_each_other_newest_first(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stack(nats_server.url, tmp_path, agents=0) as s, await s.client() as client:
        submitted = [(await client.submit_full(SPEC)).job_id for _ in range(7)]
        seen: list[str] = []
        after = ""
        pages = 0
        while True:
            request = wire.ListRequest(limit=3, after=after)
            page = await client._call("job.list", request, wire.JobList)
            seen += [j.id for j in page.jobs]
            pages += 1
            if not page.next:
                break
            after = page.next
        assert pages == 3
        assert seen == list(reversed(submitted))

        monkeypatch.setattr(api_reads, "JOB_PAGE", 2)  # a server page smaller than asked for
        assert [j.id for j in await client.jobs(limit=5)] == seen[:5]
        assert [j.id for j in await client.jobs(every=True)] == seen
        with pytest.raises(InvalidSpec, match=r"not a job\.list cursor"):
            await client._call("job.list", wire.ListRequest(after="j-1"), wire.JobList)
