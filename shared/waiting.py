"""Waiting for a job: its stored state, as the server republishes it, read until it ends.

nats-server republishes every write it stores to a job's record and its executions' records on
`shoal.v1.ns.<namespace>.state.<job-id>.>`. A waiter subscribes there before it reads or submits
the job, so no write made after that moment goes unseen, and it asks the API (`job.describe`)
only where the records alone cannot tell: the wait began after the job was created, the
connection was re-established, the records fell silent, or the job ended while an execution
still looks live.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shared import subjects, wire
from shared.bus import Bus, Inbox
from shared.views import StoredJob

log = logging.getLogger(__name__)

# Seconds of silence after which the API is asked: what a missed record costs at most.
SILENCE = 2.0
# A job's create is republished before its submit is answered, so nothing at all this long
# after the answer means the stored state does not reach this client (permissions made before
# `shoal.v1.state.>` existed, or orchestrators that have not added the republish): it then
# asks the API this often instead.
UNHEARD = 0.5
# The job ended and an execution still looks live: its last write is in flight (the two
# records are stored by two streams), or the job was stopped under it. Ask the API this soon.
SETTLING = 0.05
# A waiter that shows progress (`on_change`, `until`) but cannot count from the records alone
# asks the API at most this often: a describe of a job of 100,000 executions costs the
# orchestrator tens of milliseconds, and one per burst of records kept it answering little else.
PROGRESS_EVERY = 0.5

Describe = Callable[[str], Awaitable[wire.JobView]]


class Waiter:
    """How one client waits for its jobs; remembers whether the stored state reaches it."""

    def __init__(self, bus: Bus, describe: Describe) -> None:
        self._bus = bus
        self._describe = describe
        # Unknown until a wait from a job's creation hears (or does not hear) its records.
        self.reaches: bool | None = None

    async def listen(self, namespace: str, job_id: str) -> Inbox:
        """Subscribe to the job's stored state; the caller closes the inbox."""
        return await self._bus.subscription(subjects.state_of_job(namespace, job_id))

    async def follow(
        self,
        job_id: str,
        inbox: Inbox,
        *,
        view: wire.JobView | None = None,
        from_creation: bool = False,
        until: Callable[[wire.JobView], bool] | None = None,
        on_change: Callable[[wire.JobView], None] | None = None,
        version: int = 0,
    ) -> wire.JobView:
        """Read `inbox` (from `listen`) until the job, at `version` or later, has ended or
        `until(view)` holds; `on_change(view)` on every change of state, message or counts.

        `view` is what the API showed after the subscription; `from_creation` says the
        subscription came before the job existed, so its records alone tell all of it."""
        stored = StoredJob(job_id)
        complete = from_creation  # every stored write of the job has reached `stored`
        every_record = until is not None or on_change is not None
        reconnects = self._bus.reconnects
        shown: tuple[object, ...] | None = None
        loop = asyncio.get_running_loop()
        shown_at = -PROGRESS_EVERY  # when a view was last made for progress
        behind = False  # records arrived that the view does not reflect yet
        while True:
            if view is not None and view.version >= version:
                if on_change is not None and _progress(view) != shown:
                    on_change(view)
                    shown = _progress(view)
                if view.terminal or (until is not None and until(view)):
                    return view
            patience = self._patience(stored, view, from_creation, version)
            if behind:
                patience = min(patience, max(shown_at + PROGRESS_EVERY - loop.time(), 0.0))
            msg = await inbox.next(timeout=patience)
            if msg is None:
                if behind and complete and stored.job is not None:
                    behind, shown_at = False, loop.time()
                    view = stored.view()
                    continue
                behind, shown_at = False, loop.time()
                if from_creation and self.reaches is None:  # not one record yet
                    self.reaches = False
                    log.info("stored job state does not reach this client; asking the API")
                view = await self._describe(job_id)
                continue
            self.reaches = True
            while msg is not None:  # and whatever else arrived meanwhile
                stored.add(msg)
                msg = await inbox.next(timeout=0)
            if self._bus.reconnects != reconnects:
                complete = False  # core messages may have been lost meanwhile
            if complete and (shown_end := stored.ended()) is not None:
                view = shown_end
            elif not complete and stored.job_ended:
                behind, shown_at = False, loop.time()
                view = await self._describe(job_id)
            elif every_record and not stored.job_ended:
                behind = True
                if loop.time() >= shown_at + PROGRESS_EVERY:
                    behind, shown_at = False, loop.time()
                    if complete and stored.job is not None:
                        view = stored.view()
                    else:
                        view = await self._describe(job_id)

    def _patience(
        self, stored: StoredJob, view: wire.JobView | None, from_creation: bool, version: int
    ) -> float:
        """How long to listen before asking the API."""
        if stored.job_ended and (view is None or not view.terminal):
            return SETTLING
        if view is not None and view.version < version:
            return SETTLING  # the answering orchestrator has not seen the new version yet
        if self.reaches is False or (from_creation and not self.reaches):
            return UNHEARD
        return SILENCE


def _progress(view: wire.JobView) -> tuple[object, ...]:
    """What a change is worth showing for: the job's state and message, executions by state."""
    counts = view.execution_counts or {"": len(view.executions)}
    return view.state, view.state_message, view.version, sorted(counts.items())
