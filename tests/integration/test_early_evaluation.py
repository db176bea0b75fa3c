"""A leader evaluates a submitted job while the job's KV create is in flight: the mirror shows
the job meanwhile, writes of it wait for the create, and work offered for a job whose create
failed is withdrawn (against a real nats-server and real agents)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest

from orchestrator.api import named_job_id
from orchestrator.planner import Planner
from orchestrator.service import Orchestrator
from orchestrator.state import StateMirror
from shared import subjects, wire
from shared.bus import Bus
from shared.client import new_job_id
from shared.errors import Conflict, InvalidSpec, NotFound, Unavailable
from shared.natsserver import EmbeddedNats
from shared.spec import spec_from_data
from tests.conftest import eventually
from tests.integration.stack import FAST, Stack, leading, stack
from tests.kv_doubles import HookedCreates, ThroughBus
from tests.records import JOB

LONG = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop", "Params": {"Sleep": 30}}}]}
SHORT = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop"}}]}
SLOW = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop", "Params": {"Sleep": 0.3}}}]}


async def started_mirror(bus: Bus) -> StateMirror:
    mirror = StateMirror(bus)
    await mirror.start()
    return mirror


async def test_shown_while_created_then_kept(bus: Bus) -> None:
    mirror = await started_mirror(bus)
    try:
        async with mirror.in_flight.creating_job(JOB):
            assert mirror.jobs["j-1"].value == JOB and mirror.jobs["j-1"].revision == 0
            stored = asyncio.create_task(mirror.in_flight.is_stored(JOB))
            await mirror.create_job(JOB)
            await asyncio.sleep(0)
            assert not stored.done()  # the block (and its history line) is not over yet
        assert await stored is True
        assert mirror.jobs["j-1"].revision > 0
        assert await mirror.in_flight.is_stored(JOB) is True
    finally:
        await mirror.stop()


@pytest.mark.parametrize("seen_first", [True, False], ids=["echo-first", "echo-any-time"])
async def test_a_failed_create_takes_the_job_back(bus: Bus, seen_first: bool) -> None:
    mirror, other = await started_mirror(bus), await started_mirror(bus)
    theirs = msgspec.structs.replace(JOB, name="theirs", spec=msgspec.Raw(b'{"Count": 2}'))
    try:
        await other.create_job(theirs)  # another orchestrator stored the id first
        if seen_first:
            await eventually(lambda: mirror.job("j-1") == theirs, what="the watch's echo")
        with pytest.raises(Conflict):
            async with mirror.in_flight.creating_job(JOB):
                stored = asyncio.create_task(mirror.in_flight.is_stored(JOB))
                await mirror.create_job(JOB)
        assert await stored is False
        assert await mirror.in_flight.is_stored(JOB) is False
        # What stays is what is stored: theirs, once the watch brings it (never ours).
        await eventually(lambda: mirror.job("j-1") == theirs, what="the stored job")
    finally:
        await mirror.stop()
        await other.stop()


async def test_a_job_cas_waits_for_the_create(bus: Bus) -> None:
    mirror = await started_mirror(bus)
    running = msgspec.structs.replace(JOB, state="Running")
    try:
        async with mirror.in_flight.creating_job(JOB):
            cas = asyncio.create_task(mirror.update_job(running))
            await asyncio.sleep(0.05)
            assert not cas.done()  # a CAS on revision 0 would create the key instead
            await mirror.create_job(JOB)
            created = mirror.jobs["j-1"].revision
        await cas
        assert mirror.jobs["j-1"].revision > created
        assert mirror.job("j-1") == running
    finally:
        await mirror.stop()


async def test_a_cas_decided_on_the_shown_job_keeps_a_later_change(bus: Bus) -> None:
    """Decided on revision 0, it compares against what the create stored, not against what
    the mirror holds once the create is done (another orchestrator's stop, say)."""
    mirror, other = await started_mirror(bus), await started_mirror(bus)
    queued = msgspec.structs.replace(JOB, state="Queued")
    stopped = msgspec.structs.replace(JOB, state="Stopped")
    try:
        async with mirror.in_flight.creating_job(JOB):
            cas = asyncio.create_task(mirror.update_job(queued))
            await mirror.create_job(JOB)
            await eventually(lambda: other.job("j-1") is not None, what="the other's mirror")
            await other.update_job(stopped)
            await eventually(lambda: mirror.job("j-1") == stopped, what="the watch's echo")
        with pytest.raises(Conflict):
            await cas
        assert await stored_job(bus) == stopped
    finally:
        await mirror.stop()
        await other.stop()


async def test_a_cas_decided_on_the_shown_job_fails_if_another_submit_won(bus: Bus) -> None:
    mirror, other = await started_mirror(bus), await started_mirror(bus)
    theirs = msgspec.structs.replace(JOB, name="theirs")
    try:
        with pytest.raises(Conflict):
            async with mirror.in_flight.creating_job(JOB):
                cas = asyncio.create_task(mirror.update_job(JOB))
                await other.create_job(theirs)
                await eventually(lambda: mirror.job("j-1") == theirs, what="the watch's echo")
                await mirror.create_job(JOB)
        with pytest.raises(Conflict):
            await cas
        assert await stored_job(bus) == theirs
    finally:
        await mirror.stop()
        await other.stop()


async def test_one_create_of_an_id_at_a_time(bus: Bus) -> None:
    mirror = await started_mirror(bus)
    try:
        async with mirror.in_flight.creating_job(JOB):
            with pytest.raises(Conflict):
                async with mirror.in_flight.creating_job(JOB):
                    pass
            waiting = asyncio.create_task(mirror.in_flight.wait_job_create("j-1"))
            await mirror.create_job(JOB)
        await asyncio.wait_for(waiting, 5)  # the first block's wait still ends
        assert mirror.jobs["j-1"].revision > 0
    finally:
        await mirror.stop()


async def stored_job(bus: Bus) -> wire.JobRecord:
    jobs = await bus.kv(subjects.JOBS_BUCKET)
    entry = await jobs.get(subjects.job_key("default", "j-1"))
    assert entry is not None and entry.value is not None
    return wire.decode(entry.value, wire.JobRecord)


def test_a_remembered_spec_stands_in_only_for_the_same_bytes() -> None:
    """A submit that lost its create was remembered under the same id and version; the
    planner must parse what is stored, not use that one."""
    planner = Planner(None, None, None, None, later=lambda *args: None)  # type: ignore[arg-type]
    ours = spec_from_data({**SHORT, "Count": 2})
    canonical = json.dumps(spec_from_data(SHORT).dump()).encode()
    stored = msgspec.structs.replace(JOB, spec=msgspec.Raw(canonical))
    planner.remember(msgspec.structs.replace(JOB, spec=msgspec.Raw(b'{"Count": 2}')), ours)
    assert planner.spec_of(stored).count == 1


async def test_a_job_cas_after_a_failed_create_is_a_conflict(bus: Bus) -> None:
    mirror = await started_mirror(bus)
    try:
        with pytest.raises(RuntimeError):
            async with mirror.in_flight.creating_job(JOB):
                cas = asyncio.create_task(mirror.update_job(JOB))
                await asyncio.sleep(0)
                raise RuntimeError("the create failed")
        with pytest.raises(Conflict):
            await cas
        assert mirror.job("j-1") is None
    finally:
        await mirror.stop()


@asynccontextmanager
async def hooked_stack(
    url: str, tmp: Path
) -> AsyncIterator[tuple[Stack, HookedCreates, HookedCreates]]:
    """One orchestrator and one agent; the orchestrator's mirror creates jobs, and
    executions, through hooks the test may set."""
    jobs, executions = HookedCreates(), HookedCreates()
    hooked = {subjects.JOBS_BUCKET: jobs, subjects.EXECUTIONS_BUCKET: executions}
    s = Stack(url, tmp)
    try:
        bus = await Bus.connect(url, name="orchestrator")
        s.orchestrator = Orchestrator(bus, FAST, buckets=ThroughBus(bus, hooked))
        await s.orchestrator.start()
        await leading(s.orchestrator)  # else nothing is evaluated while the create is in flight
        await s.add_agent("node-0")
        yield s, jobs, executions
    finally:
        await s.close()


async def test_work_offered_for_a_job_that_was_not_stored_is_withdrawn(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """The job's create fails only after a node took its task (JetStream refused that one
    write), before the node reported on it: the submit gets the error, the task is cancelled
    and its record deleted (a cancelled one would count against a job of that id)."""
    async with hooked_stack(nats_server.url, tmp_path) as (s, jobs, _), await s.client() as client:
        agent = s.agents["node-0"]
        assert s.orchestrator is not None

        async def refused_after_the_offer(key: str, value: bytes) -> int:
            await eventually(lambda: agent.running_count == 1, interval=0.001, what="taken")
            raise Unavailable("JetStream did not store the job (injected)")

        jobs.hook = refused_after_the_offer
        job_id = new_job_id()
        with pytest.raises(Unavailable, match="injected"):
            await client.submit_full(LONG, job_id=job_id)
        await eventually(lambda: agent.running_count == 0, what="the task cancelled")
        mirror = s.orchestrator.mirror
        await eventually(lambda: not mirror.executions_of(job_id), what="the record deleted")
        with pytest.raises(NotFound):
            await client.describe(job_id)
        jobs.hook = None
        view = await client.run({**LONG, "Tasks": [{"Engine": {"Type": "noop"}}]}, timeout=20)
        assert view.state == "Completed"  # the orchestrator carries on as before


def inject_create(
    jobs: HookedCreates, before: Callable[[], Awaitable[object]], *, fail: bool
) -> asyncio.Event:
    """The job bucket's next create waits for `before()`, then fails (JetStream refused that
    one write) or goes through; later creates are untouched. The event returned is set once
    that create has begun."""
    begun = asyncio.Event()

    async def create(key: str, value: bytes) -> int:
        jobs.hook = None
        begun.set()
        await before()
        if fail:
            raise Unavailable("JetStream did not store the job (injected)")
        return await jobs.real_create(key, value)

    jobs.hook = create
    return begun


async def test_an_offer_is_withdrawn_when_the_create_failed_first(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """The create fails while the offer is still in flight (before the bid's reply)."""
    async with (
        hooked_stack(nats_server.url, tmp_path) as (s, jobs, executions),
        await s.client() as client,
    ):
        assert s.orchestrator is not None
        mirror, agent = s.orchestrator.mirror, s.agents["node-0"]
        offered = asyncio.Event()

        async def offer(key: str, value: bytes) -> int:  # its record is being created
            offered.set()
            return await executions.real_create(key, value)

        executions.hook = offer
        inject_create(jobs, offered.wait, fail=True)
        job_id = new_job_id()
        with pytest.raises(Unavailable, match="injected"):
            await client.submit_full(LONG, job_id=job_id)
        await eventually(
            lambda: agent._finished and not agent.running_count, what="the task cancelled"
        )
        await eventually(lambda: not mirror.executions_of(job_id), what="the record deleted")
        with pytest.raises(NotFound):
            await client.describe(job_id)


async def test_a_resent_named_job_waits_for_the_first_submit(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """The first submit's create fails after the second arrived: the second must not be
    answered from the job shown meanwhile ("unchanged"), but store the job itself."""
    async with hooked_stack(nats_server.url, tmp_path) as (s, jobs, _), await s.client() as client:
        assert s.orchestrator is not None
        release = asyncio.Event()
        begun = inject_create(jobs, release.wait, fail=True)
        spec = {**SHORT, "Name": "nightly"}
        first = asyncio.create_task(client.submit_full(spec))
        await asyncio.wait_for(begun.wait(), 10)
        second = asyncio.create_task(client.submit_full(spec))
        inflight = s.orchestrator.bus._inflight  # the API's requests being handled
        await eventually(lambda: len(inflight) == 2, what="the second submit waiting")
        release.set()
        reply = await second
        with pytest.raises(Unavailable, match="injected"):
            await first
        assert (reply.version, reply.changed) == (1, True), reply
        view = await client.wait("nightly", timeout=20)
        assert view.state == "Completed"


async def test_a_chosen_job_id_may_not_be_a_named_jobs_id(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=0) as s, await s.client() as client:
        with pytest.raises(InvalidSpec, match="version-5"):
            await client.submit_full(SHORT, job_id=named_job_id("default", "nightly"))
        assert s.orchestrator is not None and not s.orchestrator.mirror.jobs


async def test_history_starts_with_the_submit_even_when_the_create_is_slow(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """The node runs and reports the task before the job's create is acknowledged; its lines
    still come after "job submitted"."""
    async with hooked_stack(nats_server.url, tmp_path) as (s, jobs, _), await s.client() as client:
        agent = s.agents["node-0"]

        async def reported() -> None:  # an execution is finished once its report is stored
            await eventually(lambda: agent._finished, interval=0.001, what="the task's report")

        inject_create(jobs, reported, fail=False)
        view = await client.run(SHORT, timeout=20)
        assert view.state == "Completed"

        async def closed() -> list[str]:  # run() ends on the stored state, a moment before
            messages = [e.message for e in await client.history(view.id)]
            return messages if "job completed" in messages else []

        messages = await eventually(closed, what="the job's closing history line")
        assert messages[0] == "job submitted", messages
        assert messages.index("job completed") == len(messages) - 1, messages


def hold_first_bid(planner: Planner) -> tuple[asyncio.Event, asyncio.Event]:
    """The planner's first bid waits for `go` once it is `asked`; later bids go at once."""
    real, asked, go = planner._bid, asyncio.Event(), asyncio.Event()

    async def bid(node_id: str, order: wire.ExecutionOrder) -> wire.BidReply:
        if not asked.is_set():
            asked.set()
            await go.wait()
        return await real(node_id, order)

    planner._bid = bid  # type: ignore[method-assign]
    return asked, go


async def test_a_new_version_stored_during_an_offer_runs_on_the_same_node(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Version 1's offer is withdrawn (its job changed), which is not the node declining:
    version 2 may go to the only node there is."""
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        assert s.orchestrator is not None
        asked, go = hold_first_bid(s.orchestrator.planner)
        first = await client.submit_full({**LONG, "Name": "nightly"})
        await asyncio.wait_for(asked.wait(), 10)
        second = await client.submit_full({**SHORT, "Name": "nightly"})
        assert second.version == 2
        go.set()
        view = await client.wait(first.job_id, timeout=20)
        assert (view.version, view.state) == (2, "Completed"), view


async def test_a_stop_during_an_offer_is_kept(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """The plan made before the stop must not write the job back to Pending."""
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        assert s.orchestrator is not None
        asked, go = hold_first_bid(s.orchestrator.planner)
        job_id = await client.submit(LONG)
        await asyncio.wait_for(asked.wait(), 10)
        await client.stop(job_id)
        go.set()

        async def stopped() -> bool:
            view = await client.describe(job_id)
            assert view.state == "Stopped", view  # never written back to Pending
            return bool(view.executions) and all(
                e.desired_state != "running" for e in view.executions
            )

        await eventually(stopped, what="the offered execution stopped too")
        await eventually(lambda: s.agents["node-0"].running_count == 0, what="the task stopped")


async def test_submits_waiting_on_a_failed_create_wait_for_each_other(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Three submits of one named job; the first two creates fail. The third, woken with the
    second by the first's failure, must not answer from the job the second shows."""
    async with hooked_stack(nats_server.url, tmp_path) as (s, jobs, _), await s.client() as client:
        assert s.orchestrator is not None
        release, begun, fails = asyncio.Event(), asyncio.Event(), [2]

        async def create(key: str, value: bytes) -> int:
            if fails[0]:
                fails[0] -= 1
                begun.set()
                await release.wait()
                await asyncio.sleep(0.05)  # a refusal takes a round trip like any answer
                raise Unavailable("JetStream did not store the job (injected)")
            return await jobs.real_create(key, value)

        jobs.hook = create
        spec = {**SHORT, "Name": "nightly"}
        first = asyncio.create_task(client.submit_full(spec))
        await asyncio.wait_for(begun.wait(), 10)
        others = [asyncio.create_task(client.submit_full(spec)) for _ in range(2)]
        inflight = s.orchestrator.bus._inflight
        await eventually(lambda: len(inflight) == 3, what="three submits being handled")
        release.set()
        results = await asyncio.gather(first, *others, return_exceptions=True)
        replies = [r for r in results if isinstance(r, wire.SubmitReply)]
        assert len(replies) == 1 and replies[0].changed, results  # nothing from a shown job
        assert (await client.wait("nightly", timeout=20)).state == "Completed"


async def test_an_ops_job_whose_create_ack_was_lost_still_runs(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """The job is stored but its create's acknowledgement is lost (found by the chaos suite):
    the offer is withdrawn without a trace, so the ops job, evaluated again by the rescue
    scan, runs instead of failing on a cancelled execution of its own id."""
    async with hooked_stack(nats_server.url, tmp_path) as (s, jobs, _), await s.client() as client:

        async def ack_lost(key: str, value: bytes) -> int:
            jobs.hook = None
            await jobs.real_create(key, value)
            # The timeout comes late: the node took the offer, and the planner waits for it.
            await eventually(lambda: s.agents["node-0"].running_count, interval=0.001)
            raise Unavailable("create: timed out waiting for NATS (injected)")

        jobs.hook = ack_lost
        job_id = new_job_id()
        with pytest.raises(Unavailable, match="injected"):
            await client.submit_full({**SLOW, "Type": "ops"}, job_id=job_id)
        view = await client.wait(job_id, timeout=40)  # the 10 s rescue scan picks it up
        assert view.state == "Completed", view
        assert [e.compute_state for e in view.executions] == ["completed"], view
        assert all("not stored" not in e.message for e in await client.history(job_id))
