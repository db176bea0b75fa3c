"""The evaluation broker: which jobs need scheduling, highest priority first, one at a time each.

Three sources feed it: the durable SHOAL_EVALS work queue (submissions from any orchestrator,
acked only after the job was evaluated), in-process triggers (which events trigger which jobs
is `evaluation_rules.py`'s business) and timers (retry backoff, queue and total timeouts).
Triggers and timers need no durability: a new leader re-evaluates every unfinished job when it
starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from orchestrator import metrics
from shared import subjects, wire
from shared.bus import Bus, StreamMessage
from shared.errors import ShoalError
from shared.memory import shrink

log = logging.getLogger(__name__)

# (job id, the nodes the evaluation is about: None for all of them)
Evaluate = Callable[[str, frozenset[str] | None], Awaitable[None]]


async def enqueue(bus: Bus, job: wire.JobRecord, trigger: str) -> None:
    """Durably ask the leader to evaluate `job` (any orchestrator may call this)."""
    ev = wire.Evaluation(
        job_id=job.id,
        namespace=job.namespace,
        trigger=trigger,
        priority=job.priority,
        at=time.time(),
    )
    await bus.js_publish(subjects.evaluation(job.id), wire.encode(ev))


class EvalBroker:
    def __init__(self, bus: Bus, evaluate: Evaluate, *, workers: int = 8) -> None:
        self._bus = bus
        self._evaluate = evaluate
        self._workers = workers
        self._ready: list[tuple[int, int, str]] = []  # (-priority, seq, job_id)
        self._queued: set[str] = set()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        # job -> the nodes its next evaluation is about (None: the whole job)
        self._scope: dict[str, set[str] | None] = {}
        self._acks: dict[str, list[StreamMessage]] = {}
        # (when, tie-break, job, priority, the nodes it is about: None for the whole job)
        self._timers: list[tuple[float, int, str, int, frozenset[str] | None]] = []
        self._seq = itertools.count()
        self._running = 0  # workers under way
        self._wakeup = asyncio.Event()
        self._timer_wakeup = asyncio.Event()
        # Told of each evaluation taken from the durable queue (the rules count the
        # submissions and stops that reach the leader this way).
        self.on_queued: Callable[[wire.Evaluation], None] = lambda ev: None

    def compact(self) -> None:
        """Rebuild the queue's sets at the size of what is queued now: a burst's jobs left
        tables sized for all of them (a set never shrinks as its keys go)."""
        shrink(self._queued, self._busy, self._again, self._scope, self._acks)

    def trigger(self, job_id: str, priority: int = 0, nodes: Iterable[str] | None = None) -> None:
        """Evaluate soon; repeated triggers while queued collapse into one evaluation.

        `nodes`: only what concerns these nodes needs a look (a daemon job when nodes join or
        change, or its copies come up or end: a whole evaluation of it looks at every node of
        the fleet). Collapsed triggers add up their nodes; one without `nodes` makes the
        evaluation whole."""
        if nodes is None:
            self._scope[job_id] = None
        elif job_id not in self._scope:
            self._scope[job_id] = set(nodes)
        elif (scope := self._scope[job_id]) is not None:
            scope.update(nodes)
        self._push(job_id, priority)

    def _push(self, job_id: str, priority: int = 0) -> None:
        if job_id in self._busy:
            self._again.add(job_id)
            return
        if job_id in self._queued:
            return
        self._queued.add(job_id)
        heapq.heappush(self._ready, (-priority, next(self._seq), job_id))
        self._wakeup.set()

    def later(
        self, job_id: str, at: float, priority: int = 0, nodes: Iterable[str] | None = None
    ) -> None:
        """Trigger at `at` (a backoff, a timeout), like `trigger`."""
        scope = None if nodes is None else frozenset(nodes)
        heapq.heappush(self._timers, (at, next(self._seq), job_id, priority, scope))
        self._timer_wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._queued) + len(self._busy)

    async def run_workers(self) -> None:
        """Evaluate what is ready, up to `workers` jobs at once.

        A worker is started for a ready job and ends when nothing is left ready, so an idle
        broker is one waiting task, not one per worker. A task that waits keeps the objects
        of its last wake-up (a future, its coroutine, the last job's id), and those of a
        burst's last moments each keep a page of the burst in use after it is purged."""
        async with asyncio.TaskGroup() as workers:
            while True:
                while self._ready and self._running < self._workers:
                    self._running += 1
                    workers.create_task(self._work(self._pop()))
                self._wakeup.clear()
                await self._wakeup.wait()

    def _pop(self) -> str:
        _, _, job_id = heapq.heappop(self._ready)
        self._queued.discard(job_id)
        self._busy.add(job_id)
        return job_id

    async def _work(self, job_id: str) -> None:
        try:
            while True:
                await self._evaluate_one(job_id)
                if not self._ready:
                    return
                job_id = self._pop()
        finally:
            self._running -= 1

    async def _evaluate_one(self, job_id: str) -> None:
        scope = self._scope.pop(job_id, None)
        began = time.monotonic()
        try:
            await self._evaluate(job_id, None if scope is None else frozenset(scope))
        except ShoalError as exc:
            log.warning("evaluating %s failed (%s); retrying in 1s", job_id, exc)
            self.later(job_id, time.time() + 1.0)
        except Exception:
            log.exception("evaluating %s crashed; retrying in 5s", job_id)
            self.later(job_id, time.time() + 5.0)
        finally:
            metrics.EVALUATION_DURATION.observe(time.monotonic() - began)
            self._busy.discard(job_id)
            acks = self._acks.pop(job_id, [])
        for msg in acks:
            with contextlib.suppress(ShoalError):  # redelivered later; harmless
                await msg.ack()
        if job_id in self._again:
            self._again.discard(job_id)
            self._push(job_id)  # with the scope its triggers meanwhile gave it

    async def run_timers(self) -> None:
        while True:
            now = time.time()
            while self._timers and self._timers[0][0] <= now:
                _, _, job_id, priority, scope = heapq.heappop(self._timers)
                self.trigger(job_id, priority, scope)
            delay = self._timers[0][0] - now if self._timers else 3600.0
            self._timer_wakeup.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._timer_wakeup.wait()
            except TimeoutError:
                pass

    async def run_consumer(self) -> None:
        """Feed the durable work queue into the ready set, acking after evaluation."""
        await self._bus.consume(
            subjects.EVALS_STREAM,
            "shoal-scheduler",
            subjects.EVALS_SUBJECTS,
            self._queued_evaluations,
            batch=256,
            ack_wait=10.0,
        )

    async def _queued_evaluations(self, batch: list[StreamMessage]) -> None:
        for msg in batch:
            try:
                ev = wire.decode(msg.data, wire.Evaluation, what=msg.subject)
            except ShoalError as exc:
                log.warning("dropping malformed evaluation: %s", exc)
                await msg.term()
                continue
            self.on_queued(ev)
            self._acks.setdefault(ev.job_id, []).append(msg)
            self.trigger(ev.job_id, ev.priority)
