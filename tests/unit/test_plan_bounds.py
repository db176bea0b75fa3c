"""A plan's offers and stops go out a bounded number at a time, all of them, errors last."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator import planner
from shared.errors import Conflict


async def test_a_large_plan_keeps_a_bounded_number_in_flight_and_its_order() -> None:
    in_flight = peak = 0

    async def offer(i: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)
        in_flight -= 1
        return i * 2

    items = list(range(1000))
    assert await planner._bounded(items, offer) == [i * 2 for i in items]
    assert peak == planner.PLAN_CONCURRENCY


async def test_an_items_own_cancellation_is_raised_after_the_rest_and_a_cancel_stops_all() -> None:
    done: list[int] = []

    async def item(i: int) -> None:
        await asyncio.sleep(0)
        if i == 5:
            raise asyncio.CancelledError  # from inside the work, not a cancel of the plan
        done.append(i)

    with pytest.raises(asyncio.CancelledError):
        await planner._bounded(list(range(300)), item)
    assert len(done) == 299

    started = 0

    async def slow(i: int) -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(10)

    plan = asyncio.ensure_future(planner._bounded(list(range(1000)), slow))
    await asyncio.sleep(0.05)
    plan.cancel()
    with pytest.raises(asyncio.CancelledError):
        await plan
    assert started == planner.PLAN_CONCURRENCY  # none started after the cancel


async def test_every_item_is_tried_before_the_first_error_is_raised() -> None:
    done: list[int] = []

    async def stop(i: int) -> None:
        await asyncio.sleep(0)
        if i in (3, 7):
            raise Conflict(f"item {i}")
        done.append(i)

    with pytest.raises(Conflict, match="item 3"):
        await planner._bounded(list(range(500)), stop)
    assert sorted(done) == [i for i in range(500) if i not in (3, 7)]
