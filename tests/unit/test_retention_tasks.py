"""Retention's purges as tasks: one whose callers went does not leave an exception nobody
retrieved (asyncio's "Task exception was never retrieved"), and stop() ends those under way."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, cast

from orchestrator.retention import Retention
from orchestrator.state import StateMirror
from shared import wire
from shared.bus import Bus
from shared.errors import Unavailable


def _retention() -> Retention:
    return Retention(cast(Bus, None), cast(StateMirror, None), retention=30.0)


async def test_a_purge_whose_caller_went_leaves_no_unretrieved_exception() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    retention = _retention()
    release = asyncio.Event()

    async def failing(job_id: str) -> wire.JobRecord | None:
        await release.wait()
        raise Unavailable(f"delete {job_id}: timed out waiting for NATS")

    retention._purge = failing  # type: ignore[method-assign]
    caller = asyncio.create_task(retention.purge("j-1", shown=False))
    await asyncio.sleep(0)
    caller.cancel()  # a sweep cut short as its leader steps down
    await asyncio.gather(caller, return_exceptions=True)
    del caller  # its cancellation's traceback holds the purge's frame, which holds the task
    release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert retention._running == {}
    gc.collect()  # an unretrieved exception is reported when its task is collected
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert reported == []


async def test_a_caller_still_waiting_is_told_the_failure() -> None:
    retention = _retention()

    async def failing(job_id: str) -> wire.JobRecord | None:
        raise Unavailable(f"delete {job_id}: timed out waiting for NATS")

    retention._purge = failing  # type: ignore[method-assign]
    try:
        await retention.purge("j-1", shown=False)
    except Unavailable as exc:
        assert "timed out" in str(exc)
    else:
        raise AssertionError("the purge's failure was not raised to its caller")


async def test_stop_cancels_the_purges_under_way_and_is_idempotent() -> None:
    retention = _retention()
    started = asyncio.Event()

    async def slow(job_id: str) -> wire.JobRecord | None:
        started.set()
        await asyncio.sleep(3600)
        return None

    retention._purge = slow  # type: ignore[method-assign]
    caller = asyncio.create_task(retention.purge("j-1", shown=False))
    await started.wait()
    await retention.stop()
    await retention.stop()
    assert retention._running == {}
    assert (await asyncio.gather(caller, return_exceptions=True))[0].__class__ is (
        asyncio.CancelledError
    )
