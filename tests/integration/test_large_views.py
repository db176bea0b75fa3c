"""Answers about a job with more executions than one message should carry: the newest ones,
counts of all of them, pages of the rest, and a clear error rather than silence."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import api
from shared import views, wire
from shared.bus import Bus
from shared.errors import ShoalError
from shared.natsserver import EmbeddedNats
from tests.integration.stack import stack

FIVE = {"Type": "batch", "Count": 5, "Tasks": [{"Engine": {"Type": "noop"}}]}


async def test_a_view_shows_the_newest_executions_and_counts_them_all(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (1,000 in the product: a daemon on 10,000 nodes did not fit in a NATS message)
    monkeypatch.setattr(views, "VIEW_EXECUTIONS", 3)
    monkeypatch.setattr(api, "VIEW_EXECUTIONS", 3)
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(FIVE)
        await client.wait(job_id, timeout=20)
        view = await client.describe(job_id)
        assert view.state == "Completed", view
        assert view.execution_counts == {"completed": 5}
        assert view.executions_total == 5
        every = await client.executions(job_id, 0, 1000)  # capped at a page like a view
        rest = await client.execution_page(job_id, 3, 1000)
        assert len(every) == 3 and rest.total == 5 and len(rest.executions) == 2
        assert [e.id for e in view.executions] == [e.id for e in (every + rest.executions)[-3:]]
        assert len({e.id for e in every + rest.executions}) == 5


async def test_an_answer_too_large_for_nats_is_an_error_not_silence(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(FIVE)
        await client.wait(job_id, timeout=20)
        assert len(wire.encode(await client.describe(job_id))) > 600
        # as if the servers took at most 600 bytes (the client's own limit is untouched)
        assert s.orchestrator is not None
        orchestrator_bus = s.orchestrator.bus
        real = Bus.max_payload
        monkeypatch.setattr(
            Bus,
            "max_payload",
            property(lambda bus: 600 if bus is orchestrator_bus else real.fget(bus)),  # type: ignore[misc]
        )
        with pytest.raises(ShoalError, match="more than NATS carries"):
            await client.describe(job_id)
