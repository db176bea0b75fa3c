"""Answers about a job with more executions than one message should carry: the newest ones,
counts of all of them, pages of the rest, and a clear error rather than silence."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from orchestrator import api_reads
from shared import views, wire
from shared.bus import Bus
from shared.errors import ShoalError
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.stack import Stack, stack


def orchestrator_takes(monkeypatch: pytest.MonkeyPatch, s: Stack, limit: int) -> None:
    """As if the servers took at most `limit` bytes, for the orchestrator's answers only."""
    assert s.orchestrator is not None
    orchestrator_bus, real = s.orchestrator.bus, Bus.max_payload
    assert real.fget is not None
    fget = real.fget
    monkeypatch.setattr(
        Bus, "max_payload", property(lambda bus: limit if bus is orchestrator_bus else fget(bus))
    )


FIVE = {"Type": "batch", "Count": 5, "Tasks": [{"Engine": {"Type": "noop"}}]}


async def test_a_view_shows_the_newest_executions_and_counts_them_all(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (1,000 in the product: a daemon on 10,000 nodes did not fit in a NATS message)
    monkeypatch.setattr(views, "VIEW_EXECUTIONS", 3)
    monkeypatch.setattr(api_reads, "VIEW_EXECUTIONS", 3)
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(FIVE)
        await client.wait(job_id, timeout=20)
        view = await client.describe(job_id)
        assert view.state == "Completed", view
        assert view.execution_counts == {"completed": 5}
        assert view.executions_total == 5
        first = await client.execution_page(job_id, 0, 1000)  # capped at a page like a view
        rest = await client.execution_page(job_id, 3, 1000)
        assert len(first.executions) == 3 and first.total == rest.total == 5
        assert len(rest.executions) == 2
        every = await client.executions(job_id)  # page after page
        assert [e.id for e in every] == [e.id for e in first.executions + rest.executions]
        assert [e.id for e in view.executions] == [e.id for e in every[-3:]]
        assert len({e.id for e in every}) == 5


async def test_a_view_too_large_for_nats_shows_fewer_executions_and_others_say_so(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(FIVE)
        await client.wait(job_id, timeout=20)
        full = len(wire.encode(await client.describe(job_id)))
        bare = len(
            wire.encode(msgspec.structs.replace(await client.describe(job_id), executions=[]))
        )
        (listed,) = await client.jobs()  # a list counts executions and lists none
        assert listed.executions == [] and listed.execution_counts == {"completed": 5}
        # as if the servers took only a little more than the view without its executions
        assert s.orchestrator is not None
        limit = bare + 1024 + 100
        assert full > bare + 100
        orchestrator_takes(monkeypatch, s, limit)
        view = await client.describe(job_id)  # answered, with fewer executions
        assert view.execution_counts == {"completed": 5} and len(view.executions) < 5
        stopped = await client.stop(job_id)  # (already ended: answered as it is)
        assert stopped.state == "Completed"
        # an answer that is not a view cannot shrink: an error that says why, not silence
        orchestrator_takes(monkeypatch, s, 300)
        with pytest.raises(ShoalError, match="more than NATS carries"):
            await client.history(job_id)


async def test_history_comes_in_pages_that_add_up_to_all_of_it(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(FIVE)
        await client.wait(job_id, timeout=20)

        async def closed() -> list[wire.JobEvent]:  # the closing event comes just after the end
            events = await client.history(job_id)
            return events if any(e.kind == "job" and e.state == "Completed" for e in events) else []

        every = await eventually(closed, what="the job's closing event")
        assert len(every) >= 10, every  # submitted, 5 placed, 5 ended, completed
        pages, after = [], 0
        while True:
            request = wire.HistoryRequest(job_id=job_id, after=after, limit=3)
            page = await client._call("job.history", request, wire.History)
            pages.append(page.events)
            if not page.next:
                break
            after = page.next
        assert all(len(p) == 3 for p in pages[:-1]) and 1 <= len(pages[-1]) <= 3, pages
        assert [e for p in pages for e in p] == every
        # pages also end before half a message: here as if NATS took 4 KB
        orchestrator_takes(monkeypatch, s, 4096)
        first = await client._call("job.history", wire.HistoryRequest(job_id=job_id), wire.History)
        assert first.next and len(first.events) < len(every)
        assert await client.history(job_id) == every
