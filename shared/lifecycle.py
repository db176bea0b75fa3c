"""Structured concurrency for long-running components: children live in one TaskGroup.

A component owns a `Supervisor`; `start()` opens the group, `spawn()` adds children, `stop()`
(idempotent, safe before start) cancels them all and waits. A child that raises takes the
group down, so loops that must survive errors catch them themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Service:
    """`async with` for anything with `start()` and an idempotent `stop()`."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class Supervisor:
    def __init__(self, name: str) -> None:
        self.name = name
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.failure: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._runner = asyncio.create_task(self._run(), name=f"{self.name}-supervisor")
        await self._ready.wait()

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._ready.set()
                await asyncio.Event().wait()  # until cancelled by stop()
        except* Exception as errors:
            self.failure = errors.exceptions[0]
            log.error("%s: a child task failed", self.name, exc_info=self.failure)
        finally:
            self._group = None
            self._ready.set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
        if self._group is None:
            coro.close()
            raise RuntimeError(f"{self.name} is not running")
        task = self._group.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def running(self) -> bool:
        return self._group is not None

    async def wait(self) -> None:
        """Until the group ends (a child failed, or stop() was called)."""
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._runner)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        # A cancellation can be swallowed by a child that was completing at that very moment
        # (asyncio.wait_for on 3.11), so keep cancelling until the group has really ended.
        runner.cancel()
        while not runner.done():
            await asyncio.wait([runner], timeout=0.5)
            for task in list(self._tasks):  # the group cancels once; re-cancel stragglers
                if not task.done():
                    task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
