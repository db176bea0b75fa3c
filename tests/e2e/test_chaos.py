"""Chaos: under a steady stream of jobs, SIGKILL the leading orchestrator, an agent and a
nats-server, and SIGSTOP an agent past the disconnect timeout. Afterwards every accepted job
ended, none was lost, no batch partition completed twice, and the service never ran more than
Count replicas outside the window in which a fault was being repaired; a retried submit made
no second job, and an ops job failed only for an execution on the killed or frozen agent. The
counts are printed as one JSON line (and appended to $SHOAL_CHAOS_REPORT when set);
docs/reliability.md quotes them. The two bugs the chaos runs found have regression tests at the
end of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

import orchestrator.api
from compute.agent import AgentConfig, ComputeAgent
from orchestrator.service import Orchestrator, OrchestratorConfig
from shared import subjects, wire
from shared.bus import Bus
from shared.client import ShoalClient
from shared.errors import ShoalError, Unavailable
from shared.natsserver import EmbeddedNats
from tests.e2e.helpers_chaos import (
    DISCONNECT,
    NODES,
    ORCHESTRATORS,
    ChaosCluster,
    until,
)
from tests.e2e.helpers_chaos_jobs import (
    JobStream,
    Sample,
    ServiceWatch,
    Tally,
    daemon_problem,
    described,
    replicas,
    service_problem,
    tally,
)
from tests.integration.helpers_jobs import noop_job
from tests.kv_doubles import ThroughBus, Trailing

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

SERVICE_COUNT = 2
HOLD = 2 * DISCONNECT  # the least time an agent stays SIGSTOPped
# The one reason an ops job (no retries) may fail here, by design: an execution of it was
# lost with the agent that was killed or frozen (see `written_off`). It must have been placed
# there before the node was seen DISCONNECTED; PLACED_SLACK allows for a plan decided just
# before the disconnect whose record is written just after.
PLACED_SLACK = 0.5
CALM = 3.0  # seconds of steady stream between one recovery and the next fault
RECOVERY = 45.0  # the most any recovery may take before the test fails


@dataclass
class Fault:
    name: str
    target: str
    detected: float = 0.0  # seconds from injection until the system noticed / took over
    recovered: float = 0.0  # seconds from injection until healthy again (see `healthy`)
    started: float = 0.0  # monotonic, for the service watch's windows
    wall: float = 0.0  # the same instant by the wall clock, for execution timestamps

    def during(self, at: float) -> bool:
        return self.wall <= at <= self.wall + self.recovered


class Chaos:
    """The cluster, the running service and daemon, the job stream, and the faults so far."""

    def __init__(self, cluster: ChaosCluster, service: str, daemon: str, stream: JobStream):
        self.cluster = cluster
        self.service = service
        self.daemon = daemon
        self.stream = stream
        self.faults: list[Fault] = []

    async def healthy(self, since: float) -> bool:
        """Every node connected, the service at Count replicas, the daemon on every node,
        and a batch job accepted after `since` completed. Raises AssertionError saying what
        is still wrong (eventually() reports the last one)."""
        client = self.cluster.client
        try:
            svc = service_problem(await replicas(client, self.service), SERVICE_COUNT)
            dmn = daemon_problem(await replicas(client, self.daemon), set(NODES))
            probe = self.stream.batch_after(since)
            state = (await client.describe(probe.job_id)).state if probe else "not submitted"
        except ShoalError as exc:
            raise AssertionError(f"API: {exc}") from None
        assert not svc, f"service: {svc}"
        assert not dmn, f"daemon: {dmn}"
        assert state == "Completed", f"first batch job since the fault: {state}"
        return True

    async def fault(
        self, name: str, target: str, inject: Callable[[Fault], Awaitable[None]]
    ) -> Fault:
        """Run `inject` (which breaks something, sees it noticed, and repairs it), then
        wait until healthy; both durations are measured from the start of `inject`."""
        fault = Fault(name, target, started=time.monotonic(), wall=time.time())
        self.faults.append(fault)
        await inject(fault)
        await until(
            lambda: self.healthy(fault.started),
            timeout=RECOVERY,
            interval=0.2,
            what=f"recovery from {name} ({target})",
        )
        fault.recovered = time.monotonic() - fault.started
        await asyncio.sleep(CALM)  # paces the stream: the service watch checks this stretch
        return fault

    def repairing(self, sample: Sample) -> str:
        """The target of the fault being repaired when `sample` was taken, or ""."""
        return next(
            (f.target for f in self.faults if f.started <= sample.at <= f.started + f.recovered),
            "",
        )

    def since(self, fault: Fault) -> float:
        return time.monotonic() - fault.started

    async def service_node(self, avoid: str = "") -> str:
        r = await replicas(self.cluster.client, self.service)
        nodes = sorted(e.node_id for e in r.live if e.node_id != avoid)
        assert nodes, f"no service replica outside {avoid}: {r}"
        return nodes[0]


async def kill_leader(chaos: Chaos) -> Fault:
    cluster = chaos.cluster

    async def holder() -> str:
        name = await cluster.lease_holder()
        assert name, "nobody holds the lease"
        return name

    leader = await until(holder, what="a lease holder")
    follower = next(n for n in ORCHESTRATORS if n != leader)

    async def inject(fault: Fault) -> None:
        await cluster.orchestrators[leader].kill()

        async def taken() -> bool:
            return await cluster.lease_holder() == follower

        await until(
            taken,
            timeout=RECOVERY,
            interval=0.1,
            what=f"{follower} to take the lease",
        )
        fault.detected = chaos.since(fault)
        await cluster.start_orchestrator(leader)  # back as the follower

    return await chaos.fault("kill -9 the leading orchestrator", leader, inject)


async def noticed_lost(chaos: Chaos, victim: str, fault: Fault) -> None:
    """Until the orchestrators say `victim` is DISCONNECTED; records when that was."""
    await until(
        lambda: chaos.cluster.node_is(victim, "DISCONNECTED"),
        timeout=RECOVERY,
        interval=0.1,
        what=f"{victim} DISCONNECTED",
    )
    fault.detected = chaos.since(fault)


async def kill_agent(chaos: Chaos) -> Fault:
    cluster = chaos.cluster
    victim = await chaos.service_node()

    async def inject(fault: Fault) -> None:
        await cluster.agents[victim].kill()
        await noticed_lost(chaos, victim, fault)
        await cluster.start_agent(victim)  # the same name and state directory

    return await chaos.fault("kill -9 an agent", victim, inject)


async def kill_nats(chaos: Chaos) -> Fault:
    cluster = chaos.cluster
    # The member leading the jobs bucket: the most disruptive one to lose.
    leaders = await cluster.stream_leaders()
    dead = leaders.get("KV_shoal-jobs") or "nats-0"
    index = int(dead.rsplit("-", 1)[1])

    async def inject(fault: Fault) -> None:
        cluster.servers[index].kill()
        await cluster.servers[index].stop()  # reap it
        await until(
            lambda: cluster.led_without(dead),
            timeout=RECOVERY,
            interval=0.2,
            what=f"every stream led by a member other than {dead}",
        )
        fault.detected = chaos.since(fault)
        await cluster.restart_server(index)
        await until(
            cluster.replicas_current,
            timeout=RECOVERY,
            interval=0.2,
            what=f"{dead} to catch up",
        )

    return await chaos.fault("kill -9 a nats-server", dead, inject)


async def pause_agent(chaos: Chaos, avoid: str) -> Fault:
    cluster = chaos.cluster
    victim = await chaos.service_node(avoid=avoid)

    async def replaced() -> bool:
        r = await replicas(cluster.client, chaos.service)
        assert all(e.node_id != victim for e in r.live), "replica still on the paused node"
        return not service_problem(r, SERVICE_COUNT)

    async def inject(fault: Fault) -> None:
        cluster.agents[victim].pause()
        try:
            await noticed_lost(chaos, victim, fault)
            await until(replaced, timeout=RECOVERY, interval=0.1, what="a new replica")
            # Held until its replica runs elsewhere, and at least twice the disconnect timeout.
            await asyncio.sleep(max(0.0, HOLD - chaos.since(fault)))
        finally:
            cluster.agents[victim].resume()

    return await chaos.fault("SIGSTOP an agent, then SIGCONT", victim, inject)


def window(chaos: Chaos, at: float) -> str:
    """The target of the fault being repaired at wall-clock time `at`, or "calm"."""
    return next((f.target for f in chaos.faults if f.during(at)), "calm")


def nearest(chaos: Chaos, at: float) -> str:
    """Wall-clock time `at` from the injection of the nearest fault."""
    f = min(chaos.faults, key=lambda f: abs(at - f.wall), default=None)
    return "before any fault" if f is None else f"{at - f.wall:+.1f} s from {f.target}"


def summary(chaos: Chaos, watch: ServiceWatch, result: Tally) -> dict[str, object]:
    """The counts of one run, for the JSON line docs/reliability.md quotes."""
    stream = chaos.stream
    calm = [s for s in watch.samples if not chaos.repairing(s)]
    stormy = [s for s in watch.samples if chaos.repairing(s)]
    ended = Counter(  # why executions ended other than completed, and during which fault
        f"{why} ({window(chaos, at)})" for at, why in result.ended
    )
    return {
        "test": "test_chaos_under_a_steady_stream_of_jobs",
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cores": os.cpu_count(),
        "jobs_submitted": stream.submitted,
        "submit_attempts_failed": stream.failed_attempts,
        "submit_errors": dict(stream.errors),
        "found_on_retry": stream.found_on_retry,
        "jobs_accepted": len(stream.accepted),
        "jobs": dict(result.jobs),
        "completed": sum(n for k, n in result.jobs.items() if k.endswith("Completed")),
        "failed": len(result.failed),
        "failures": result.failed,
        "cut_short": {  # when each execution of a failed job was placed and ended
            name: [explain(chaos, e) for e in execs] for name, execs in result.cut_short.items()
        },
        "executions": dict(result.executions),
        "ended_otherwise": dict(ended),
        "declined": dict(result.declined),
        "slowest_jobs": [  # seconds from submit to the end, the nearest fault, the executions
            f"{name}: {took:.1f} s, submitted {nearest(chaos, at)}: {execs}"
            for took, name, at, execs in result.slowest[:3]
        ],
        "retried": result.retried,
        "duplicates": len(result.second_jobs),  # stream names with more than one job
        "second_jobs": result.second_jobs,
        "completed_twice": len(result.duplicates),  # batch partitions / ops nodes
        "lost_jobs": len(result.missing),
        "phantom_jobs": len(result.phantoms),
        "phantoms": [f"{v.name} ({v.state})" for v in result.phantoms],
        "service_samples": len(watch.samples),
        "service_max_reported_calm": max((s.reported for s in calm), default=0),
        "service_max_reported_during_repair": max((s.reported for s in stormy), default=0),
        "service_max_live_records": max((s.live for s in watch.samples), default=0),
        "service_over_count_samples_during_repair": dict(
            Counter(chaos.repairing(s) for s in stormy if s.reported > SERVICE_COUNT)
        ),
        "faults": [
            {
                "fault": f.name,
                "target": f.target,
                "detected_s": round(f.detected, 2),
                "recovered_s": round(f.recovered, 2),
            }
            for f in chaos.faults
        ],
    }


@pytest.mark.timeout(420)
async def test_chaos_under_a_steady_stream_of_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.monotonic()
    cluster = ChaosCluster(tmp_path, monkeypatch.setenv)
    try:
        await cluster.start()
        client = cluster.client
        run = uuid.uuid4().hex[:6]
        service = await client.submit(
            noop_job(f"svc-{run}", type="service", count=SERVICE_COUNT, sleep="forever")
        )
        daemon = await client.submit(
            noop_job(f"dmn-{run}", type="daemon", count=None, sleep="forever")
        )
        stream = JobStream(client, f"stream-{run}")
        watch = ServiceWatch(client, service)
        chaos = Chaos(cluster, service, daemon, stream)
        background = [asyncio.create_task(stream.run()), asyncio.create_task(watch.run())]
        try:
            await until(lambda: chaos.healthy(began), timeout=RECOVERY, what="a healthy start")
            setup = time.monotonic() - began
            await asyncio.sleep(CALM)
            await kill_leader(chaos)
            agent = await kill_agent(chaos)
            await kill_nats(chaos)
            await pause_agent(chaos, avoid=agent.target)
        finally:
            stream.stop()
            watch.stop()
            done, _ = await asyncio.wait(background, timeout=60)
            for task in background:
                if task in done:
                    task.result()  # re-raise whatever broke the stream or the watch
                else:
                    task.cancel()
        drain_started = time.monotonic()

        async def all_ended() -> bool:
            views = await client.jobs(limit=100_000)
            left = tally(views, stream.accepted, stream.prefix).not_terminal
            assert not left, f"{len(left)} not ended, e.g. {left[:3]}"
            return True

        await until(all_ended, timeout=60, interval=0.5, what="every accepted job to end")
        drain = time.monotonic() - drain_started
        # A list counts executions; their placements and ends are in each job's describe.
        views = await described(client, await client.jobs(limit=100_000))
        result = tally(views, stream.accepted, stream.prefix)
        svc_end = service_problem(await replicas(client, service), SERVICE_COUNT)
        dmn_end = daemon_problem(await replicas(client, daemon), set(NODES))

        report = summary(chaos, watch, result)
        report["duration_s"] = round(time.monotonic() - began, 1)
        report["setup_s"], report["drain_s"] = round(setup, 1), round(drain, 1)
        line = json.dumps(report)
        print(f"CHAOS {line}")
        (tmp_path / "chaos-report.json").write_text(line + "\n")
        if path := os.environ.get("SHOAL_CHAOS_REPORT"):
            with open(path, "a") as out:
                out.write(line + "\n")

        assert not result.missing, f"accepted jobs lost: {result.missing}"
        assert not result.duplicates, f"partitions completed twice: {result.duplicates}"
        # A retried submit resolves to the job the failed attempt stored, if it stored one:
        # one job per name, and none the stream was not given the id of.
        assert not result.second_jobs, f"second jobs under one name: {result.second_jobs}"
        stray = [f"{v.name} ({v.id}, {v.state})" for v in result.phantoms]
        assert not stray, f"jobs nobody was given the id of: {stray}"
        # Batch jobs retry until they complete; an ops job may fail only for an execution
        # lost with the agent that was killed or frozen.
        bad = [
            f"{failure}; {[explain(chaos, e) for e in execs]}"
            for failure, execs in zip(result.failed, result.cut_short.values(), strict=True)
            if "(ops)" not in failure or not execs or not all(written_off(chaos, e) for e in execs)
        ]
        assert not bad, f"jobs that did not complete: {bad}"
        assert not svc_end, f"service at the end: {svc_end}"
        assert not dmn_end, f"daemon at the end: {dmn_end}"
        high = [s for s in watch.samples if s.reported > SERVICE_COUNT and not chaos.repairing(s)]
        assert not high, f"service above Count={SERVICE_COUNT} once reconciled: {high[:5]}"
    except BaseException:
        print(cluster.tails())
        raise
    finally:
        await cluster.close()


def written_off(chaos: Chaos, e: wire.ExecutionView) -> Fault | None:
    """The fault that lost `e` by design: `e` was on the agent it killed or froze, placed
    before the node was seen DISCONNECTED, and lost after the fault was injected."""
    return next(
        (
            f
            for f in chaos.faults
            if "agent" in f.name
            and e.node_id == f.target
            and e.compute_state == "lost"
            and e.created_at <= f.wall + f.detected + PLACED_SLACK
            and e.updated_at >= f.wall
        ),
        None,
    )


def explain(chaos: Chaos, e: wire.ExecutionView) -> str:
    """An execution's end, timed from the injection of the agent fault on its node."""
    f = next((f for f in chaos.faults if "agent" in f.name and f.target == e.node_id), None)
    if f is None:
        return f"{e.node_id}: {e.compute_state}: {e.error}"
    return (
        f"{e.node_id}: placed {e.created_at - f.wall:+.2f} s, {e.compute_state} "
        f"{e.updated_at - f.wall:+.2f} s from the {f.name!r} (seen {f.detected:.2f} s): {e.error}"
    )


# ---- regression tests for the two bugs the chaos runs found ----------------------------------
# A follower whose KV watch trailed the leader's writes reconciled heartbeats against its own
# mirror and cancelled executions the leader had just placed ("not wanted here"); a submit that
# failed after storing its job was retried, and an orchestrator whose mirror had not seen the
# job yet made a second one. See "Bugs the chaos suite found" in docs/reliability.md.


async def test_follower_with_a_lagging_mirror_leaves_the_leaders_executions_alone(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    def config(name: str) -> OrchestratorConfig:
        return OrchestratorConfig(
            heartbeat_interval=0.2,
            disconnect_timeout=1.5,
            bid_timeout=2.0,
            lease_ttl=2.0,
            name=name,
        )

    buses = [await Bus.connect(nats_server.url, name=n) for n in ("leader", "follower", "n1")]
    leader = Orchestrator(buses[0], config("leader"))
    # The follower sees the executions bucket half a second late, as on a loaded host.
    late = ThroughBus(buses[1], {subjects.EXECUTIONS_BUCKET: Trailing(0.5)})
    follower = Orchestrator(buses[1], config("follower"), buckets=late)
    agent = ComputeAgent(
        buses[2], AgentConfig(name="n1", heartbeat_interval=0.2, state_dir=tmp_path)
    )
    try:
        await leader.start()  # a lone orchestrator leads by the time start() returns
        await follower.start()
        assert leader.leading and not follower.leading
        await agent.start()
        await agent.wait_registered(10)
        async with await ShoalClient.connect(nats_server.url) as client:
            job_id = await client.submit(noop_job("under-a-lagging-follower", sleep=1))
            with contextlib.suppress(TimeoutError):
                await client.wait(job_id, timeout=6)
            state = (await client.describe(job_id)).state
        cancelled = [
            e for e in leader.mirror.executions_of(job_id) if e.compute_state == "cancelled"
        ]
        assert state == "Completed", f"the job is {state}"
        assert not cancelled, f"{len(cancelled)} cancelled: {cancelled[0].error!r}"
    finally:
        await agent.stop()
        await follower.stop()
        await leader.stop()
        for bus in buses:
            await bus.close()


async def test_a_retried_submit_never_makes_a_second_job(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    def config(name: str) -> OrchestratorConfig:
        return OrchestratorConfig(heartbeat_interval=0.2, lease_ttl=2.0, name=name)

    buses = [await Bus.connect(nats_server.url, name=n) for n in ("leader", "follower")]
    # The leader sees the jobs bucket late, as while a nats-server fails over (5 s: longer
    # than the follower's retries of the enqueue, ~2 s).
    late = ThroughBus(buses[0], {subjects.JOBS_BUCKET: Trailing(5.0)})
    leader = Orchestrator(buses[0], config("leader"), buckets=late)
    follower = Orchestrator(buses[1], config("follower"))
    attempts: list[object] = []

    async def no_evaluation(*args: object) -> None:
        attempts.append(args)
        raise Unavailable("publish shoal.v1.evals.x: nats: no response from stream")

    spec = json.dumps(noop_job("submitted-once")).encode()
    request = wire.encode(wire.SubmitRequest(spec=msgspec.Raw(spec)))
    try:
        await leader.start()
        await follower.start()
        assert leader.leading and not follower.leading
        # The follower stores the job, then cannot enqueue its evaluation (only a follower
        # enqueues; the leader triggers in memory): the job is stored, so that is no error.
        monkeypatch.setattr(orchestrator.api, "enqueue", no_evaluation)
        first = await follower.api.submit(request)
        assert len(attempts) > 1, "the follower should have tried (and retried) the enqueue"
        assert leader.mirror.job(first.job_id) is None, "the leader must not have seen it yet"
        # The reply may still be lost on the way back, so the client retries; the leader,
        # whose mirror has not seen the job yet, answers this time, with the same job.
        again = await leader.api.submit(request)
        assert again.job_id == first.job_id, (first, again)
        assert not again.changed, again
        jobs = await buses[0].kv(subjects.JOBS_BUCKET)
        names = []
        for key in await jobs.keys():
            entry = await jobs.get(key)
            assert entry is not None and entry.value is not None
            names.append(wire.decode(entry.value, wire.JobRecord, what=key).name)
        assert names.count("submitted-once") == 1, names
    finally:
        await follower.stop()
        await leader.stop()
        for bus in buses:
            await bus.close()
