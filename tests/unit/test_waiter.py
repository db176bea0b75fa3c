"""Waiter.follow: a job's end read from its stored records, and when the API is asked instead."""

from __future__ import annotations

import collections
import json
from typing import Any

import msgspec
import pytest

from shared import wire
from shared.bus import Message
from shared.views import job_view
from shared.waiting import PROGRESS_EVERY, Waiter

JOB = "j-1"
SPEC = msgspec.Raw(json.dumps({"Type": "batch", "Count": 1}).encode())


def job_record(state: str = "Pending", version: int = 1) -> wire.JobRecord:
    return wire.JobRecord(
        id=JOB, name=JOB, namespace="default", type="batch", spec=SPEC, state=state,
        version=version,
    )  # fmt: skip


def exec_record(state: str, eid: str = "e-1") -> wire.ExecutionRecord:
    return wire.ExecutionRecord(
        id=eid, job_id=JOB, namespace="default", node_id="n", compute_state=state,
        created_at=1.0,
    )  # fmt: skip


def job(state: str = "Pending", version: int = 1) -> Message:
    return Message(
        f"shoal.v1.ns.default.state.{JOB}.job", wire.encode(job_record(state, version)), "", None
    )


def execution(state: str, eid: str = "e-1") -> Message:
    data = wire.encode(exec_record(state, eid))
    return Message(f"shoal.v1.ns.default.state.{JOB}.execution.{eid}", data, "", None)


class FakeInbox:
    """Batches of messages, each arriving at once; a None batch is a silence (a timeout)."""

    def __init__(self, *batches: list[Message] | None) -> None:
        self.batches = collections.deque(batches)
        self.arrived: collections.deque[Message] = collections.deque()
        self.patience: list[float] = []  # every timeout but the 0 of reading what arrived

    async def next(self, timeout: float | None = None) -> Message | None:
        if self.arrived:
            return self.arrived.popleft()
        if timeout == 0:
            return None
        assert timeout is not None
        self.patience.append(timeout)
        if not self.batches:
            raise AssertionError("waited past the last message")
        batch = self.batches.popleft()
        if batch is None:
            return None
        self.arrived.extend(batch)
        return self.arrived.popleft()


class FakeBus:
    reconnects = 0


class Api:
    """`job.describe` answering the views given, one per call."""

    def __init__(self, *views: wire.JobView) -> None:
        self.views = list(views)
        self.calls = 0

    async def describe(self, job_id: str) -> wire.JobView:
        assert job_id == JOB
        self.calls += 1
        return self.views.pop(0)


def view(state: str, *executions: str, version: int = 1) -> wire.JobView:
    records = [exec_record(s, f"e-{i}") for i, s in enumerate(executions, 1)]
    return job_view(job_record(state, version), records, with_spec=True)


async def follow(api: Api, inbox: FakeInbox, **kwargs: Any) -> wire.JobView:
    waiter = Waiter(FakeBus(), api.describe)  # type: ignore[arg-type]
    return await waiter.follow(JOB, inbox, **kwargs)  # type: ignore[arg-type]


async def test_a_job_followed_from_its_creation_needs_no_read() -> None:
    inbox = FakeInbox(
        [execution("offered"), job()], [execution("running")], [job("Running")],
        [execution("completed")], [job("Completed")],
    )  # fmt: skip
    api = Api()
    ended = await follow(api, inbox, from_creation=True)
    assert ended.state == "Completed" and ended.execution_counts == {"completed": 1}
    assert api.calls == 0


async def test_an_end_with_an_execution_still_live_asks_the_api_soon() -> None:
    """The job's end is stored by one stream and its execution's by another."""
    inbox = FakeInbox([job(), execution("running")], [job("Stopped")], None)
    api = Api(view("Stopped", "cancelled"))
    ended = await follow(api, inbox, from_creation=True)
    assert ended.state == "Stopped" and api.calls == 1
    assert inbox.patience[-1] == 0.05


async def test_a_wait_begun_after_the_creation_confirms_the_end_with_the_api() -> None:
    """Records written before the subscription were never seen: the API shows them all."""
    inbox = FakeInbox([job("Completed")])
    api = Api(view("Completed", "completed", "completed"))
    ended = await follow(api, inbox, view=view("Running", "running", "completed"))
    assert len(ended.executions) == 2 and api.calls == 1


async def test_an_older_version_shown_by_the_api_does_not_end_the_wait() -> None:
    inbox = FakeInbox(None)
    api = Api(view("Completed", "completed", version=2))
    ended = await follow(api, inbox, view=view("Completed", "completed"), version=2)
    assert ended.version == 2 and inbox.patience == [0.05]


async def test_changes_are_shown_once_and_an_end_ends_any_until() -> None:
    inbox = FakeInbox([execution("running")], [execution("running")], [job("Stopped")])
    api = Api(view("Running", "running"), view("Stopped", "cancelled"))
    shown: list[tuple[str, dict[str, int]]] = []
    ended = await follow(
        api,
        inbox,
        view=view("Running", "offered"),
        until=lambda v: False,
        on_change=lambda v: shown.append((v.state, v.execution_counts)),
    )
    # The second burst came within PROGRESS_EVERY of the first ask: no ask of its own; the
    # job's end is asked about at once.
    assert ended.state == "Stopped" and api.calls == 2
    assert shown == [
        ("Running", {"offered": 1}),
        ("Running", {"running": 1}),
        ("Stopped", {"cancelled": 1}),
    ]


async def test_progress_asks_the_api_at_most_once_per_interval() -> None:
    """Records arriving in quick bursts (a job of 100,000 partitions) are shown from one
    describe per PROGRESS_EVERY: the last burst's, once that much time has passed."""
    inbox = FakeInbox(
        [execution("running")], [execution("completed", "e-2")], None, [job("Completed")]
    )
    api = Api(
        view("Running", "running"),
        view("Running", "completed", "completed"),
        view("Completed", "completed", "completed"),
    )
    shown: list[tuple[str, dict[str, int]]] = []
    ended = await follow(
        api,
        inbox,
        view=view("Running", "offered"),
        on_change=lambda v: shown.append((v.state, v.execution_counts)),
    )
    assert ended.state == "Completed" and api.calls == 3
    assert 0 < inbox.patience[2] <= PROGRESS_EVERY  # waiting only for the interval's end
    assert shown == [
        ("Running", {"offered": 1}),
        ("Running", {"running": 1}),
        ("Running", {"completed": 2}),
        ("Completed", {"completed": 2}),
    ]


async def test_progress_of_a_job_followed_from_its_creation_comes_from_its_records() -> None:
    # The last two bursts come within PROGRESS_EVERY: shown when that much has passed (None).
    inbox = FakeInbox([job()], [execution("running")], [job("Running")], None)
    api = Api()
    ended = await follow(
        api,
        inbox,
        from_creation=True,
        until=lambda v: v.execution_counts.get("running", 0) == 1 and v.state == "Running",
    )
    assert ended.state == "Running" and api.calls == 0


async def test_silence_from_a_new_job_means_the_stored_state_does_not_arrive() -> None:
    api = Api(view("Running", "running"), view("Completed", "completed"))
    waiter = Waiter(FakeBus(), api.describe)  # type: ignore[arg-type]
    inbox = FakeInbox(None, None)
    ended = await waiter.follow(JOB, inbox, from_creation=True)  # type: ignore[arg-type]
    assert ended.state == "Completed" and waiter.reaches is False
    assert inbox.patience == [0.5, 0.5]  # and the API is asked that often from then on
    inbox = FakeInbox([job("Completed")])
    api.views = [view("Completed")]
    await waiter.follow(JOB, inbox, view=view("Running"))  # type: ignore[arg-type]
    assert inbox.patience == [0.5] and waiter.reaches is True  # records arrive again


@pytest.mark.parametrize("reconnects", [0, 1])
async def test_a_reconnect_makes_the_records_incomplete(reconnects: int) -> None:
    """Core messages sent while the connection was down are lost: ask the API."""
    bus = FakeBus()
    api = Api(view("Completed", "completed", "completed"))
    waiter = Waiter(bus, api.describe)  # type: ignore[arg-type]

    class Reconnecting(FakeInbox):
        async def next(self, timeout: float | None = None) -> Message | None:
            bus.reconnects = reconnects
            return await super().next(timeout)

    inbox = Reconnecting([job()], [execution("completed")], [job("Completed")])
    ended = await waiter.follow(JOB, inbox, from_creation=True)  # type: ignore[arg-type]
    assert api.calls == reconnects
    assert len(ended.executions) == (2 if reconnects else 1)
