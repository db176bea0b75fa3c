"""The Shoal scenarios: latency, throughput, fleet (virtual nodes) and daemon join."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.fleet import VirtualFleet
from bench.procs import SHOAL, Child, Usage, mib
from bench.profile import Profiler, hot_spots, print_hot_spots
from bench.report import percentile, summary_ms
from bench.stack import DEFAULTS, ShoalStack, StackConfig
from bench.timeline import print_timeline, timeline
from compute.agent import AgentConfig, ComputeAgent
from shared import subjects, trace, wire
from shared.bus import Bus, Message
from shared.client import ShoalClient
from shared.errors import ShoalError

TRIVIAL: dict[str, Any] = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop"}}]}


def trivial(publisher: str = "") -> dict[str, Any]:
    """The trivial job; without a Publisher (and no ResultPaths) it keeps no archive: its
    output stays in SHOAL_LOGS, as for any such job."""
    if not publisher:
        return TRIVIAL
    return {**TRIVIAL, "Tasks": [{**TRIVIAL["Tasks"][0], "Publisher": {"Type": publisher}}]}


DAEMON: dict[str, Any] = {
    "Name": "bench-daemon",
    "Type": "daemon",
    "Tasks": [{"Engine": {"Type": "noop", "Params": {"Sleep": "forever"}}}],
}
WARMUP = 5
IDLE_WINDOW = 5.0


def _usage_delta(before: Usage, after: Usage) -> dict[str, float]:
    wall = after.at - before.at
    cpu = after.cpu - before.cpu
    return {
        "cpu_s": round(cpu, 3),
        "user_s": round(after.user - before.user, 3),
        "system_s": round(after.system - before.system, 3),
        "wall_s": round(wall, 3),
        "cpu_share": round(cpu / wall, 3) if wall > 0 else 0.0,
        "rss_mib": mib(after.rss),
        "peak_rss_mib": mib(after.hwm),
        "read_syscalls": after.reads - before.reads,
        "write_syscalls": after.writes - before.writes,
    }


async def _phases(stack: ShoalStack, started: dict[str, float]) -> dict[str, float]:
    """Median time from the client's submit to each kind of history event, in ms."""
    offsets: dict[str, list[float]] = {}
    for job_id, t0 in started.items():
        seen: set[str] = set()
        for event in await stack.client.history(job_id):
            label = f"{event.kind} {event.state or '?'}"
            if label in seen:
                continue
            seen.add(label)
            offsets.setdefault(label, []).append(event.at - t0)
    medians = {k: round(percentile(v, 50) * 1000, 2) for k, v in offsets.items()}
    return dict(sorted(medians.items(), key=lambda kv: kv[1]))


def per_unit(before: dict[str, int], after: dict[str, int], n: float) -> dict[str, float]:
    """The orchestrator connection's NATS traffic per unit (job, heartbeat)."""
    return {
        "published": round((after["in_msgs"] - before["in_msgs"]) / n, 2),
        "received": round((after["out_msgs"] - before["out_msgs"]) / n, 2),
        "bytes_published": round((after["in_bytes"] - before["in_bytes"]) / n),
        "bytes_received": round((after["out_bytes"] - before["out_bytes"]) / n),
    }


# ---- 1. latency --------------------------------------------------------------------------------


async def latency(
    workdir: Path,
    n: int,
    agents: int = 3,
    publisher: str = "",
    profile: Path | None = None,
    *,
    trace_dir: Path | None = None,
) -> dict[str, Any]:
    spec = trivial(publisher)
    if trace_dir is not None:  # every process of the stack, and this one, marks its steps
        os.environ["SHOAL_TRACE"] = str(trace_dir)
        trace.enable(trace_dir)
    try:
        out = await _latency(workdir, n, agents, publisher, profile, spec)
    finally:
        if trace_dir is not None:
            del os.environ["SHOAL_TRACE"]
            trace.disable()
    if trace_dir is not None:  # the stack has stopped: its processes have written their marks
        out["timeline"] = timeline(trace_dir)
        print_timeline(out["timeline"])
    return out


async def _latency(
    workdir: Path,
    n: int,
    agents: int,
    publisher: str,
    profile: Path | None,
    spec: dict[str, Any],
) -> dict[str, Any]:
    async with ShoalStack(workdir, StackConfig(agents=agents)) as stack:
        client = stack.client
        for _ in range(WARMUP):
            await client.wait(await client.submit(spec), timeout=30)
        profiler = (
            Profiler(stack.orchestrator.pid, profile) if profile and stack.orchestrator else None
        )
        if profiler is not None:
            await asyncio.sleep(1.0)  # py-spy attaches
        totals: list[float] = []
        started: dict[str, float] = {}
        failed = 0
        before, traffic0 = stack.orchestrator_usage(), stack.traffic()
        others0 = (stack.nats_usage().cpu, stack.agents_cpu(), time.process_time())
        for _ in range(n):
            wall0 = time.time()
            t0 = time.perf_counter()
            # ShoalClient.run: listen to the job's stored state, submit, end on it (no read).
            view = await client.run(spec, timeout=30)
            t2 = time.perf_counter()
            if view.state != "Completed":
                failed += 1
            totals.append(t2 - t0)
            started[view.id] = wall0
        after, traffic1 = stack.orchestrator_usage(), stack.traffic()
        others1 = (stack.nats_usage().cpu, stack.agents_cpu(), time.process_time())
        if profiler is not None:
            await profiler.stop()
        phases = await _phases(stack, started)
    orch = _usage_delta(before, after)
    out: dict[str, Any] = {
        "n": n,
        "agents": agents,
        "publisher": publisher or "(default)",
        "failed": failed,
        "submit_to_completed": summary_ms(totals),
        "phases_p50_ms": phases,
        "orchestrator": {
            **orch,
            "cpu_ms_per_job": round(orch["cpu_s"] * 1000 / n, 2),
            "writes_per_job": round(orch["write_syscalls"] / n, 2),
            "reads_per_job": round(orch["read_syscalls"] / n, 2),
        },
        "orchestrator_nats_msgs_per_job": per_unit(traffic0, traffic1, n),
        # The whole chain's CPU per job: in a sequential run it all lies on the critical path.
        "cpu_ms_per_job": {
            "orchestrator": round(orch["cpu_s"] * 1000 / n, 2),
            "nats_server": round((others1[0] - others0[0]) * 1000 / n, 2),
            "agents": round((others1[1] - others0[1]) * 1000 / n, 2),
            "client": round((others1[2] - others0[2]) * 1000 / n, 2),
        },
    }
    if profiler is not None and profile is not None:
        out["profile"] = hot_spots(profile)
        print_hot_spots("orchestrator during latency", out["profile"])
    return out


# ---- 2. throughput -----------------------------------------------------------------------------


async def throughput(
    workdir: Path, n: int, agents: int = 3, profile: Path | None = None, publisher: str = ""
) -> dict[str, Any]:
    spec = trivial(publisher)
    async with ShoalStack(workdir, StackConfig(agents=agents)) as stack:
        client = stack.client
        for _ in range(WARMUP):
            await client.wait(await client.submit(spec), timeout=30)
        ended: dict[str, tuple[str, float]] = {}
        all_ended = asyncio.Event()

        async def on_event(msg: Message) -> None:
            event = wire.decode(msg.data, wire.JobEvent)
            if event.kind == "job" and event.state in wire.TERMINAL_JOB_STATES:
                ended.setdefault(event.job_id, (event.state, time.perf_counter()))
                if len(ended) >= n:
                    all_ended.set()

        # One wildcard subscription to the job histories (what client.wait() listens to),
        # rather than n concurrent client.wait() calls whose describes would load the API.
        await client.bus.subscribe(subjects.EVENTS_SUBJECTS, on_event)
        await client.bus.flush()
        await asyncio.sleep(0.5)
        ended.clear()
        profiler = (
            Profiler(stack.orchestrator.pid, profile) if profile and stack.orchestrator else None
        )
        first_agent = next(iter(stack.agents.values()), None)
        agent_profile = profile.with_name("throughput-agent.txt") if profile else None
        agent_profiler = (
            Profiler(first_agent.pid, agent_profile)
            if agent_profile and first_agent and first_agent.pid
            else None
        )
        if profiler is not None:
            await asyncio.sleep(1.0)  # py-spy attaches
        orch0, nats0, agents0 = stack.orchestrator_usage(), stack.nats_usage(), stack.agents_cpu()
        traffic0, client0 = stack.traffic(), time.process_time()
        t0 = time.perf_counter()
        ids = await asyncio.gather(*(client.submit(spec) for _ in range(n)))
        t_submitted = time.perf_counter()
        mine = set(ids)
        deadline = max(120.0, n * 0.25)
        while not mine <= ended.keys():
            remaining = deadline - (time.perf_counter() - t0)
            if remaining <= 0:
                break
            all_ended.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_ended.wait(), min(remaining, 1.0))
        done = [ended[i] for i in ids if i in ended]
        t_end = max((at for _, at in done), default=time.perf_counter())
        orch1, nats1, agents1 = stack.orchestrator_usage(), stack.nats_usage(), stack.agents_cpu()
        traffic1, client1 = stack.traffic(), time.process_time()
        if profiler is not None:
            await profiler.stop()
        if agent_profiler is not None:
            await agent_profiler.stop()
    elapsed = t_end - t0
    completed = sum(1 for state, _ in done if state == "Completed")
    orch = _usage_delta(orch0, orch1)
    out: dict[str, Any] = {
        "n": n,
        "agents": agents,
        "publisher": publisher or "(default)",
        "completed": completed,
        "failed_or_stopped": len(done) - completed,
        "unfinished": n - len(done),
        "seconds": round(elapsed, 3),
        "jobs_per_s": round(completed / elapsed, 1) if elapsed > 0 else 0.0,
        "submits_per_s": round(n / (t_submitted - t0), 1),
        # If the tail after the last submit reply is short, the submit path is the limit.
        "submit_phase_s": round(t_submitted - t0, 3),
        "tail_after_last_submit_s": round(t_end - t_submitted, 3),
        "orchestrator": {**orch, "cpu_ms_per_job": round(orch["cpu_s"] * 1000 / n, 2)},
        "orchestrator_nats_msgs_per_job": per_unit(traffic0, traffic1, n),
        "nats_server_cpu_s": round(nats1.cpu - nats0.cpu, 3),
        "agents_cpu_s": round(agents1 - agents0, 3),
        "client_cpu_s": round(client1 - client0, 3),
    }
    if profiler is not None and profile is not None:
        out["profile"] = hot_spots(profile)
        print_hot_spots("orchestrator during throughput", out["profile"])
    if agent_profiler is not None and agent_profile is not None:
        out["agent_profile"] = hot_spots(agent_profile)
        print_hot_spots("one agent during throughput", out["agent_profile"])
    return out


# ---- 3. fleet ----------------------------------------------------------------------------------


def product_has_virtual() -> bool:
    """True once `shoal compute --virtual K` exists (then the product's own fleet is used)."""
    done = subprocess.run(
        [str(SHOAL), "compute", "--help"], capture_output=True, text=True, check=False
    )
    return "--virtual" in done.stdout


def _fleet_child(stack: ShoalStack, k: int, kind: str) -> Child:
    interval = str(stack.config.heartbeat_interval)
    if kind == "product":
        args = [
            str(SHOAL),
            "--nats",
            stack.url,
            "compute",
            "--name",
            "vnode",
            "--virtual",
            str(k),
            "--engines",
            "noop",
            "--heartbeat-interval",
            interval,
            "--state-dir",
            str(stack.workdir / "fleet"),
        ]
    else:
        args = [
            sys.executable,
            "-m",
            "bench.fleet",
            "--nats",
            stack.url,
            "--count",
            str(k),
            "--interval",
            interval,
        ]
    return Child(f"fleet-{k}", args, stack.logs)


async def _count_heartbeating(bus: Bus, k: int, child: Child, timeout: float) -> tuple[float, int]:
    """Seconds until k distinct nodes heartbeat (agents heartbeat only once registered), and
    how many hellos were sent meanwhile (retries of unanswered ones included)."""
    seen: set[str] = set()
    reached = asyncio.Event()
    hellos = 0

    async def on_beat(msg: Message) -> None:
        seen.add(subjects.node_of(msg.subject))
        if len(seen) >= k:
            reached.set()

    async def on_hello(msg: Message) -> None:
        nonlocal hellos
        hellos += 1

    started = time.monotonic()
    sub = await bus.subscribe(subjects.ALL_HEARTBEATS, on_beat)
    hello_sub = await bus.subscribe(subjects.ALL_HELLOS, on_hello)
    try:
        while not reached.is_set():
            child.check()
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"only {len(seen)} of {k} virtual nodes registered in time")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reached.wait(), 1.0)
    finally:
        await sub.unsubscribe()
        await hello_sub.unsubscribe()
    return time.monotonic() - started, hellos


async def _silence_detection(stack: ShoalStack, probes: VirtualFleet) -> list[float]:
    """Silence each probe node a third of an interval apart; seconds until the API says so."""
    client = stack.client
    last_beats: dict[str, float] = {}
    noticed: dict[str, float] = {}
    for node_id in probes.nodes:
        last_beats[node_id] = probes.silence(node_id)
        await asyncio.sleep(stack.config.heartbeat_interval / len(probes.nodes))
    deadline = time.monotonic() + stack.config.disconnect_timeout * 4 + 10
    while len(noticed) < len(last_beats) and time.monotonic() < deadline:
        for node_id in last_beats:
            if node_id in noticed:
                continue
            with contextlib.suppress(ShoalError):
                view = await client.node(node_id)
                if view.connection == "DISCONNECTED":
                    noticed[node_id] = time.time()
        await asyncio.sleep(0.02)
    return [noticed[i] - last_beats[i] for i in last_beats if i in noticed]


async def fleet_one(
    workdir: Path,
    k: int,
    *,
    window: float,
    kind: str,
    profile: Path | None = None,
) -> dict[str, Any]:
    async with ShoalStack(workdir, StackConfig(agents=0)) as stack:
        client = stack.client
        idle0 = stack.orchestrator_usage()
        await asyncio.sleep(IDLE_WINDOW)  # the orchestrator's own cost with no node at all
        idle = _usage_delta(idle0, stack.orchestrator_usage())
        child = _fleet_child(stack, k, kind)
        probe_bus = await Bus.connect(stack.url, name="bench-probes")
        probes = VirtualFleet(
            probe_bus, [f"probe-{i}" for i in range(3)], interval=stack.config.heartbeat_interval
        )
        try:
            register_s, hellos = await _count_heartbeating(client.bus, k, child, timeout=240.0)
            probes.start()
            await probes.register()
            registered = stack.orchestrator_usage()
            await asyncio.sleep(3.0)  # let the registration burst settle

            kv_writes = 0
            dropped: set[str] = set()

            async def on_kv(msg: Message) -> None:
                nonlocal kv_writes
                kv_writes += 1
                with contextlib.suppress(ShoalError):
                    record = wire.decode(msg.data, wire.NodeRecord)
                    if record.connection == "DISCONNECTED":
                        dropped.add(record.info.id)

            kv_sub = await client.bus.subscribe(f"$KV.{subjects.NODES_BUCKET}.>", on_kv)
            profiler = (
                Profiler(stack.orchestrator.pid, profile)
                if profile is not None and stack.orchestrator is not None
                else None
            )
            before, nats0, fleet0 = stack.orchestrator_usage(), stack.nats_usage(), child.usage()
            traffic0 = stack.traffic()
            await asyncio.sleep(window)
            after, nats1, fleet1 = stack.orchestrator_usage(), stack.nats_usage(), child.usage()
            traffic1 = stack.traffic()
            if profiler is not None:
                await profiler.stop()
            await kv_sub.unsubscribe()
            wall = after.at - before.at

            # Does the orchestrator keep up? The age of what it last heard from a few nodes.
            sample_ids = random.sample([f"vnode-{i}" for i in range(k)], min(20, k))
            ages = []
            for node_id in sample_ids:
                with contextlib.suppress(ShoalError):
                    view = await client.node(node_id)
                    ages.append(time.time() - view.last_seen)

            listing: dict[str, Any]
            t = time.perf_counter()
            try:
                nodes = await client.nodes()
                listing = {
                    "ok": True,
                    "nodes": len(nodes),
                    "ms": round((time.perf_counter() - t) * 1000, 1),
                }
            except ShoalError as exc:
                listing = {"ok": False, "error": str(exc)[:300]}

            detection = await _silence_detection(stack, probes)
            jobs = await _jobs_on_fleet(client, stack)
        finally:
            await probes.stop()
            await probe_bus.close()
            await child.stop()
    orch = _usage_delta(before, after)
    beats = wall * (k + len(probes.nodes)) / stack.config.heartbeat_interval
    out: dict[str, Any] = {
        "nodes": k,
        "fleet": kind,
        "heartbeat_interval_s": stack.config.heartbeat_interval,
        "disconnect_timeout_s": stack.config.disconnect_timeout,
        "register_s": round(register_s, 2),
        "hellos_per_node_while_registering": round(hellos / k, 2),
        "peak_rss_after_registration_mib": mib(registered.hwm),
        "window_s": round(wall, 2),
        "orchestrator": orch,
        "orchestrator_idle_cpu_share": idle["cpu_share"],
        "orchestrator_cpu_us_per_heartbeat": round(
            (orch["cpu_s"] - idle["cpu_share"] * wall) / beats * 1e6, 1
        ),
        "orchestrator_nats_msgs_per_heartbeat": per_unit(traffic0, traffic1, beats),
        "nats_server_cpu_share": round((nats1.cpu - nats0.cpu) / wall, 3),
        "fleet_cpu_share": round((fleet1.cpu - fleet0.cpu) / wall, 3),
        "node_kv_writes_per_s": round(kv_writes / wall, 1),
        "nodes_wrongly_disconnected": len(dropped),
        "last_seen_age_max_s": round(max(ages), 2) if ages else None,
        "node_list": listing,
        "silence_detected_s": [round(d, 2) for d in detection],
        "jobs": jobs,
    }
    # The burst's orchestrator CPU above what the heartbeats alone cost in the window.
    burst_cpu = jobs.pop("burst_cpu_s") - orch["cpu_share"] * jobs.pop("burst_wall_s")
    jobs["burst_cpu_ms_per_job"] = round(burst_cpu * 1000 / max(jobs["burst_completed"], 1), 2)
    if profiler is not None and profile is not None:
        out["profile"] = hot_spots(profile)
        print_hot_spots(f"orchestrator with {k} heartbeating nodes", out["profile"])
    return out


async def _jobs_on_fleet(
    client: ShoalClient, stack: ShoalStack, sequential: int = 20, burst: int = 200
) -> dict[str, Any]:
    """Trivial jobs scheduled onto the whole fleet: each evaluation sees every node."""
    spec = trivial()
    totals = []
    for _ in range(sequential):
        t0 = time.perf_counter()
        await client.wait(await client.submit(spec), timeout=60)
        totals.append(time.perf_counter() - t0)
    ended: set[str] = set()
    all_ended = asyncio.Event()

    async def on_event(msg: Message) -> None:
        event = wire.decode(msg.data, wire.JobEvent)
        if event.kind == "job" and event.state in wire.TERMINAL_JOB_STATES:
            ended.add(event.job_id)
            if len(ended) >= burst:
                all_ended.set()

    sub = await client.bus.subscribe(subjects.EVENTS_SUBJECTS, on_event)
    await client.bus.flush()
    before = stack.orchestrator_usage()
    t0 = time.perf_counter()
    ids = await asyncio.gather(*(client.submit(spec) for _ in range(burst)))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_ended.wait(), 120)
    elapsed = time.perf_counter() - t0
    after = stack.orchestrator_usage()
    await sub.unsubscribe()
    done = len(ended & set(ids))
    return {
        "sequential_p50_ms": summary_ms(totals)["p50_ms"],
        "burst": burst,
        "burst_completed": done,
        "burst_jobs_per_s": round(done / elapsed, 1),
        "burst_cpu_s": after.cpu - before.cpu,
        "burst_wall_s": after.at - before.at,
    }


async def fleet(
    workdir: Path,
    sizes: list[int],
    *,
    window: float,
    kind: str = "auto",
    profile_dir: Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    if kind == "auto":
        kind = "product" if product_has_virtual() else "bench"
    runs = []
    for k in sizes:
        progress(f"fleet: {k} virtual nodes ({kind} fleet), {window:g}s window")
        spot = profile_dir / f"fleet-{k}.txt" if profile_dir else None
        runs.append(
            await fleet_one(workdir / f"fleet-{k}", k, window=window, kind=kind, profile=spot)
        )
    return {"runs": runs}


# ---- 4. daemon join ----------------------------------------------------------------------------


async def daemon_join(
    workdir: Path, n: int, agents: int = 3, fleet: int = 0, jobs: int = 1
) -> dict[str, Any]:
    """`n` nodes join one after another; each time, how long until every one of `jobs` daemon
    jobs runs on it. With `fleet`, a virtual fleet of that many nodes runs them all first."""
    async with ShoalStack(workdir, StackConfig(agents=agents)) as stack:
        client = stack.client
        # node -> when it ran (or was offered) a copy, per job; all jobs' events on one
        # subscription (a describe of a job with 10,000 executions is heavy to poll)
        running: dict[str, dict[str, float]] = {}
        placed: dict[str, dict[str, float]] = {}
        hellos: dict[str, float] = {}
        changed = asyncio.Event()

        async def on_event(msg: Message) -> None:
            event = wire.decode(msg.data, wire.JobEvent)
            now = time.perf_counter()
            if event.kind == "execution" and event.state == "offered":
                placed.setdefault(event.job_id, {}).setdefault(event.node_id, now)
            if event.kind == "execution" and event.state == "running":
                running.setdefault(event.job_id, {}).setdefault(event.node_id, now)
                changed.set()

        async def on_hello(msg: Message) -> None:
            hellos.setdefault(subjects.node_of(msg.subject), time.perf_counter())

        async def until(done: Callable[[], bool], timeout: float) -> None:
            async with asyncio.timeout(timeout):
                while not done():
                    changed.clear()
                    await changed.wait()

        await client.bus.subscribe(subjects.EVENTS_SUBJECTS, on_event)
        await client.bus.subscribe(subjects.ALL_HELLOS, on_hello)
        await client.bus.flush()
        children: list[Child] = []
        try:
            if fleet:
                children.append(_fleet_child(stack, fleet, "product"))
                await _count_heartbeating(client.bus, fleet, children[0], max(60.0, fleet / 100))
            job_ids = [
                await client.submit({**DAEMON, "Name": f"bench-daemon-{i}"}) for i in range(jobs)
            ]
            everywhere = fleet + agents
            deadline = time.monotonic() + max(60.0, everywhere * jobs / 50)
            while not all(len(running.get(j, ())) >= everywhere for j in job_ids):
                with contextlib.suppress(TimeoutError):
                    await until(
                        lambda: all(len(running.get(j, ())) >= everywhere for j in job_ids), 10
                    )
                copies = [len(running.get(j, ())) for j in job_ids]
                print(f"  daemon copies running: {copies} of {everywhere} each", file=sys.stderr)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"daemon copies still not running everywhere: {copies}")
            joined: list[ComputeAgent] = []
            buses: list[Bus] = []
            to_running: list[float] = []
            to_placed: list[float] = []
            orch0 = stack.orchestrator_usage()
            try:
                for i in range(n):
                    name = f"join-{i}"
                    bus = await Bus.connect(stack.url, name=name)
                    buses.append(bus)
                    agent = ComputeAgent(
                        bus,
                        AgentConfig(
                            name=name,
                            engines=("noop",),
                            heartbeat_interval=DEFAULTS.heartbeat_interval,
                            state_dir=workdir / "joiners" / name,
                        ),
                    )
                    started = time.perf_counter()
                    await agent.start()
                    joined.append(agent)
                    await until(
                        lambda name=name: all(name in running.get(j, {}) for j in job_ids), 30
                    )
                    t0 = hellos.get(name, started)
                    to_running.append(max(running[j][name] for j in job_ids) - t0)
                    offers = [placed[j][name] for j in job_ids if name in placed.get(j, {})]
                    if offers:
                        to_placed.append(max(offers) - t0)
                    await asyncio.sleep(0.5)
                orch1 = stack.orchestrator_usage()
                for job_id in job_ids:
                    await client.stop(job_id)
            finally:
                for agent in joined:
                    await agent.stop()
                for bus in buses:
                    await bus.close()
        finally:
            for child in children:
                await child.stop()
    return {
        "joins": n,
        "agents_before": agents,
        "fleet": fleet,
        "daemon_jobs": jobs,
        # the joins' phase, heartbeats of the fleet included
        "orchestrator_cpu_share": round((orch1.cpu - orch0.cpu) / (orch1.at - orch0.at), 3),
        "hello_to_running": summary_ms(to_running),
        "hello_to_running_each_ms": [round(t * 1000, 1) for t in to_running],
        "hello_to_offered": summary_ms(to_placed),
    }
