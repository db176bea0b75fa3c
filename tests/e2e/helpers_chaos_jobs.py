"""The chaos suite's workload and bookkeeping: a steady stream of jobs, the replica counts of
the long-running jobs, a service-replica watch, and the final tally of every accepted job."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from shared import wire
from shared.client import ShoalClient
from shared.errors import InvalidSpec, ShoalError
from tests.integration.helpers_jobs import noop_job

LIVE = wire.LIVE_COMPUTE_STATES


# ---- the job stream --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    name: str
    job_id: str
    type: str
    count: int
    at: float  # monotonic time the submit returned
    attempts: int


# (type, Count, noop Sleep) cycled through; one ops job in eight.
MIX: tuple[tuple[str, int, float], ...] = (
    ("batch", 1, 0.0),
    ("batch", 2, 0.3),
    ("batch", 1, 1.0),
    ("batch", 2, 0.0),
    ("batch", 1, 0.5),
    ("ops", 1, 0.2),
    ("batch", 2, 1.0),
    ("batch", 1, 0.0),
)


@dataclass
class JobStream:
    """Submits noop jobs one after another until stopped. A submission that fails (a fault
    in the way) is not accepted: it is counted and retried under the same name, and a failed
    attempt which had stored the job must resolve to that job (the tally counts second jobs)."""

    client: ShoalClient
    prefix: str
    pace: float = 0.3
    accepted: list[Accepted] = field(default_factory=list)
    submitted: int = 0
    failed_attempts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    found_on_retry: int = 0  # a retry answered "unchanged": the failed attempt had stored it
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            await self.submit(n)
            await asyncio.sleep(self.pace)

    async def submit(self, n: int) -> Accepted:
        type_, count, sleep = MIX[n % len(MIX)]
        name = f"{self.prefix}-{n:04d}"
        spec = noop_job(name, type=type_, count=count if type_ == "batch" else None, sleep=sleep)
        self.submitted += 1
        for attempt in range(1, 121):
            try:
                reply = await self.client.submit_full(spec)
            except InvalidSpec:
                raise
            except ShoalError as exc:
                self.failed_attempts += 1
                self.errors[_kind_of(exc)] += 1
                await asyncio.sleep(0.5)
                continue
            self.found_on_retry += not reply.changed
            job = Accepted(name, reply.job_id, type_, count, time.monotonic(), attempt)
            self.accepted.append(job)
            return job
        raise AssertionError(f"{name} was never accepted: {self.errors.most_common(3)}")

    def batch_after(self, since: float) -> Accepted | None:
        return next((a for a in self.accepted if a.at > since and a.type == "batch"), None)


def _kind_of(exc: ShoalError) -> str:
    """An error without its ids, so that errors of one kind count together."""
    text = re.sub(r"\b[je]-[0-9a-f-]{8,}", "<id>", str(exc))
    return f"{type(exc).__name__}: {text[:120]}"


# ---- the long-running jobs -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replicas:
    """A long-running job as the records and the nodes' heartbeats show it."""

    live: list[wire.ExecutionView]  # desired running and not ended, by the records
    reported: dict[str, str]  # execution id -> node, as connected nodes report running them
    connected: set[str]


async def replicas(client: ShoalClient, job_id: str) -> Replicas:
    # Nodes first: every execution a node reports was created before the list is read.
    nodes = await client.nodes()
    execs = await client.executions(job_id)
    ids = {e.id for e in execs}
    connected = {n.id for n in nodes if n.connection == "CONNECTED"}
    reported = {i: n.id for n in nodes if n.id in connected for i in n.running if i in ids}
    live = [e for e in execs if e.desired_state == "running" and e.compute_state in LIVE]
    return Replicas(live, reported, connected)


def service_problem(r: Replicas, count: int) -> str:
    """Why a service is not at exactly `count` running replicas (or "")."""
    running = {e.id: e for e in r.live if e.compute_state == "running" and e.node_id in r.connected}
    if len(r.live) != count or len(running) != count:
        return f"{len(running)} running / {len(r.live)} live replicas, want {count}"
    if sorted(e.partition for e in r.live) != list(range(count)):
        return f"partitions {sorted(e.partition for e in r.live)}"
    if set(r.reported) != set(running):
        said = sorted(f"{i} on {e.node_id}" for i, e in running.items())
        seen = sorted(f"{i} on {n}" for i, n in r.reported.items())
        return f"nodes report {seen}, records say {said}"
    return ""


def daemon_problem(r: Replicas, nodes: set[str]) -> str:
    """Why a daemon is not running exactly once on each of `nodes` (or "")."""
    if not nodes <= r.connected:
        return f"nodes {sorted(nodes - r.connected)} not connected"
    on = Counter(e.node_id for e in r.live if e.compute_state == "running")
    if set(on) != nodes or any(c != 1 for c in on.values()):
        return f"running copies per node {dict(on)}"
    if sorted(r.reported.values()) != sorted(nodes):
        return f"nodes report copies on {sorted(r.reported.values())}"
    return ""


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # monotonic
    reported: int  # replicas the connected nodes report running
    live: int  # live replicas in the records


@dataclass
class ServiceWatch:
    """Samples a service's replica count every `interval` seconds until stopped."""

    client: ShoalClient
    job_id: str
    interval: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                r = await replicas(self.client, self.job_id)
            except ShoalError:
                pass  # a fault in the way: no sample
            else:
                self.samples.append(Sample(time.monotonic(), len(r.reported), len(r.live)))
            await asyncio.sleep(self.interval)


def _timeline(view: wire.JobView) -> str:
    """A job's executions, timed from its submission."""
    t0 = view.created_at
    return "; ".join(
        f"{e.node_id} p{e.partition} {e.compute_state} +{e.created_at - t0:.1f}"
        f"..+{e.updated_at - t0:.1f}" + (f" ({e.error[:60]})" if e.error else "")
        for e in view.executions
    )


# ---- the tally -------------------------------------------------------------------------------


@dataclass
class Tally:
    jobs: Counter[str] = field(default_factory=Counter)  # "<type> <state>" -> jobs
    executions: Counter[str] = field(default_factory=Counter)  # compute state -> executions
    ended: list[tuple[float, str]] = field(default_factory=list)  # the others: (when, why)
    declined: Counter[str] = field(default_factory=Counter)  # why bids were declined
    # (seconds from submit to the end, name, wall-clock submit time, executions), slowest first.
    slowest: list[tuple[float, str, float, str]] = field(default_factory=list)
    retried: int = 0  # executions beyond the first per batch partition (bids declined aside)
    duplicates: list[str] = field(default_factory=list)  # partitions completed twice
    second_jobs: list[str] = field(default_factory=list)  # a stream name's jobs beyond one
    missing: list[str] = field(default_factory=list)  # accepted jobs the cluster does not know
    phantoms: list[wire.JobView] = field(default_factory=list)  # the stream's, never accepted
    not_terminal: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "<name> (<type>): <state message>"
    # A failed job's name -> its executions that ended neither completed nor declined.
    cut_short: dict[str, list[wire.ExecutionView]] = field(default_factory=dict)


async def described(client: ShoalClient, views: list[wire.JobView]) -> list[wire.JobView]:
    """The jobs of `views` as `job.describe` shows them: with their executions."""
    slots = asyncio.Semaphore(16)

    async def one(view: wire.JobView) -> wire.JobView:
        async with slots:
            return await client.describe(view.id)

    return list(await asyncio.gather(*(one(v) for v in views)))


def tally(views: list[wire.JobView], accepted: list[Accepted], prefix: str) -> Tally:
    out = Tally()
    by_id = {v.id: v for v in views}
    ours = {a.job_id for a in accepted}
    out.missing = [f"{a.name} ({a.job_id})" for a in accepted if a.job_id not in by_id]
    out.phantoms = [v for v in views if v.name.startswith(prefix) and v.id not in ours]
    by_name: dict[str, list[str]] = {}
    for v in views:
        if v.name.startswith(prefix):
            by_name.setdefault(v.name, []).append(v.id)
    out.second_jobs = [f"{n}: {', '.join(ids)}" for n, ids in by_name.items() if len(ids) > 1]
    for a in accepted:
        view = by_id.get(a.job_id)
        if view is None:
            continue
        out.jobs[f"{view.type} {view.state}"] += 1
        if not view.terminal:
            out.not_terminal.append(f"{a.name}: {view.state} {view.state_message}")
        elif view.state != "Completed":
            out.failed.append(f"{a.name} ({view.type}): {view.state} {view.state_message}")
            out.cut_short[a.name] = [
                e for e in view.executions if e.compute_state not in ("completed", "rejected")
            ]
        out.executions.update(e.compute_state for e in view.executions)
        if view.terminal:
            took = view.updated_at - view.created_at
            out.slowest.append((took, a.name, view.created_at, _timeline(view)))
        out.declined.update(
            re.sub(r"node-\d", "node-N", e.error)[:80]
            for e in view.executions
            if e.compute_state == "rejected"
        )
        out.ended.extend(
            (e.updated_at, re.sub(r"node-\d", "node-N", f"{e.compute_state}: {e.error}"))
            for e in view.executions
            if e.compute_state not in ("completed", "rejected")
        )
        # Partition for batch; node for ops (each node runs partition 0 once).
        attempts: dict[str, list[wire.ExecutionView]] = {}
        for e in view.executions:
            where = f"partition {e.partition}" if view.type == "batch" else e.node_id
            if e.compute_state != "rejected":  # a declined bid never ran
                attempts.setdefault(where, []).append(e)
        for where, execs in attempts.items():
            if view.type == "batch":
                out.retried += len(execs) - 1
            done = [e for e in execs if e.compute_state == "completed"]
            if len(done) > 1:
                ids = ", ".join(f"{e.id} on {e.node_id}" for e in done)
                out.duplicates.append(f"{a.name} {where} completed {len(done)} times: {ids}")
    out.slowest.sort(reverse=True)
    return out
