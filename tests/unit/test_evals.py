"""The evaluation broker's triggers: collapsing, and the nodes an evaluation is about."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, cast

from orchestrator.evals import EvalBroker
from shared.bus import Bus
from tests.conftest import eventually


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, frozenset[str] | None]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def __call__(self, job_id: str, nodes: frozenset[str] | None) -> None:
        self.calls.append((job_id, nodes))
        self.entered.set()
        await self.gate.wait()


async def _drain(broker: EvalBroker) -> None:
    await eventually(lambda: broker.pending == 0, timeout=5, interval=0.01, what="no evaluation")


async def test_collapsed_triggers_add_up_their_nodes_and_a_whole_one_wins() -> None:
    recorder = Recorder()
    broker = EvalBroker(cast(Bus, None), recorder)
    broker.trigger("daemon", 0, ["a"])
    broker.trigger("daemon", 0, ["b"])
    broker.trigger("batch")
    broker.trigger("mixed", 0, ["a"])
    broker.trigger("mixed")
    broker.trigger("mixed", 0, ["c"])
    async with asyncio.TaskGroup() as tasks:
        worker = tasks.create_task(broker.run_workers())
        await _drain(broker)
        worker.cancel()
    assert sorted(recorder.calls, key=lambda c: c[0]) == [
        ("batch", None),
        ("daemon", frozenset({"a", "b"})),
        ("mixed", None),
    ]


async def test_a_timer_keeps_the_nodes_it_was_set_for() -> None:
    recorder = Recorder()
    broker = EvalBroker(cast(Bus, None), recorder)
    at = time.time() - 1  # due already; equal times must not compare the scopes
    broker.later("daemon", at, 0, ["a"])
    broker.later("other", at, 0, None)
    broker.later("other2", at, 0, ["b"])
    async with asyncio.TaskGroup() as tasks:
        timers = tasks.create_task(broker.run_timers())
        worker = tasks.create_task(broker.run_workers())
        await eventually(lambda: len(recorder.calls) == 3, timeout=5, what="three evaluations")
        timers.cancel()
        worker.cancel()
    assert sorted(recorder.calls, key=lambda c: c[0]) == [
        ("daemon", frozenset({"a"})),
        ("other", None),
        ("other2", frozenset({"b"})),
    ]


async def test_triggers_during_an_evaluation_make_the_next_one_with_their_own_nodes() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    broker = EvalBroker(cast(Bus, None), recorder)
    broker.trigger("daemon", 0, ["a"])
    worker: Any = None
    async with asyncio.TaskGroup() as tasks:
        worker = tasks.create_task(broker.run_workers())
        await recorder.entered.wait()
        broker.trigger("daemon", 0, ["b"])  # while the evaluation of "a" runs
        broker.trigger("daemon", 0, ["c"])
        recorder.gate.set()
        await _drain(broker)
        worker.cancel()
    assert recorder.calls == [("daemon", frozenset({"a"})), ("daemon", frozenset({"b", "c"}))]


async def test_after_a_burst_drains_compact_rebuilds_the_queue_at_its_size_and_it_still_works() -> (
    None
):
    recorder = Recorder()
    broker = EvalBroker(cast(Bus, None), recorder)
    for i in range(10_000):
        broker.trigger(f"job-{i}", 0, [f"node-{i % 3}"])
    async with asyncio.TaskGroup() as tasks:
        worker = tasks.create_task(broker.run_workers())
        await _drain(broker)
        # Emptied, the tables are still those of the burst: a set never shrinks by itself.
        burst_size = sys.getsizeof(broker._queued) + sys.getsizeof(broker._scope)
        broker.compact()
        compacted = sys.getsizeof(broker._queued) + sys.getsizeof(broker._scope)
        broker.trigger("after", 0, ["a"])
        broker.trigger("after", 0, ["b"])
        await _drain(broker)
        worker.cancel()
    assert len(recorder.calls) == 10_001
    assert recorder.calls[-1] == ("after", frozenset({"a", "b"}))
    assert burst_size > 256 * 1024 and compacted < 4096, (burst_size, compacted)


async def test_at_most_workers_evaluate_at_once_and_an_idle_broker_keeps_no_worker() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    broker = EvalBroker(cast(Bus, None), recorder, workers=4)
    for i in range(20):
        broker.trigger(f"job-{i}", priority=i % 3)
    async with asyncio.TaskGroup() as tasks:
        supervisor = tasks.create_task(broker.run_workers())
        await eventually(lambda: len(recorder.calls) == 4, timeout=5, what="four evaluations")
        for _ in range(20):  # turns of the loop in which a fifth would have started
            await asyncio.sleep(0)
        assert len(recorder.calls) == 4
        recorder.gate.set()
        await _drain(broker)
        await eventually(lambda: not _workers(), timeout=5, what="the workers to end")
        broker.trigger("late")  # an idle broker starts a worker again
        await _drain(broker)
        supervisor.cancel()
    assert len(recorder.calls) == 21 and recorder.calls[-1] == ("late", None)
    # highest priority first: the first four are the priority-2 jobs
    assert all(int(job.split("-")[1]) % 3 == 2 for job, _ in recorder.calls[:4])


def _workers() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == "EvalBroker._work"
    ]
