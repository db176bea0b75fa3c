"""Stopping an orchestrator answers the API requests it has already taken, and takes no more."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from shared import subjects, wire
from shared.client import ShoalClient
from shared.errors import Unavailable
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.stack import Stack

SPEC = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop"}}]}


async def test_submits_taken_before_a_stop_are_answered_and_each_history_says_so(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    s = Stack(nats_server.url, tmp_path)
    client = await ShoalClient.connect(nats_server.url, timeout=3.0)
    try:
        orchestrator = await s.start_orchestrator()
        ids = [f"j-{uuid.uuid4()}" for _ in range(200)]
        submits = [asyncio.ensure_future(client.submit_full(SPEC, job_id=i)) for i in ids]
        await eventually(lambda: orchestrator.mirror.jobs, interval=0.001, what="a first job")
        # As `shoal orchestrator` does on SIGTERM: stop, then close the connection.
        await s.stop_orchestrator()
        results = await asyncio.gather(*submits, return_exceptions=True)
        answered = {r.job_id for r in results if isinstance(r, wire.SubmitReply)}
        # Every other submit was turned away at once (no orchestrator was listening any
        # more), none cut off mid-way and left to time out.
        others = [r for r in results if not isinstance(r, wire.SubmitReply)]
        turned_away = [r for r in others if isinstance(r, Unavailable) and _nobody(r)]
        assert turned_away == others, others[:3]
        assert answered

        await s.start_orchestrator()
        stored = {job.id for job in await client.jobs(limit=1000)}
        assert stored == answered
        for job_id in sorted(answered)[:50]:
            history = await client.history(job_id)
            assert [e.message for e in history[:1]] == ["job submitted"], (job_id, history)
    finally:
        await client.close()
        await s.close()


def _nobody(error: Exception) -> bool:
    return "nobody is listening" in str(error)


async def test_a_stopped_orchestrator_takes_no_requests_and_no_hellos(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    # Its connection still open (a process on its way out): the queue group must hand these
    # to another orchestrator, so none may be taken here, to be answered from a stopped mirror.
    s = Stack(nats_server.url, tmp_path)
    try:
        orchestrator = await s.start_orchestrator()
        await orchestrator.stop()
        probe = orchestrator.bus
        for subject in (subjects.api("job.list"), subjects.ALL_HELLOS.replace("*", "n-1")):
            try:
                await probe.request(subject, b"{}", timeout=2.0)
            except Unavailable as exc:
                assert _nobody(exc), exc
            else:
                raise AssertionError(f"a stopped orchestrator answered on {subject}")
    finally:
        await s.close()
