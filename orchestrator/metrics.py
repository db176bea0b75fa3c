"""The orchestrator's Prometheus metrics: counters and histograms bumped where their events
happen, and gauges of state (jobs, nodes, leadership, queue depth) read at scrape time.

All live in prometheus_client's default registry (what `/metrics` of shared/probes.py serves).
Labels have bounded values only (a job type, a state, a reason from a fixed set): never a job,
execution or node id.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared import wire

if TYPE_CHECKING:
    from orchestrator.service import Orchestrator

JOB_TYPES = ("batch", "ops", "daemon", "service")
# Latency buckets from a noop task's tens of milliseconds to a long batch job's hours.
_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)

JOBS_SUBMITTED = Counter(
    "shoal_jobs_submitted_total", "Jobs submitted (new jobs and new versions)", ["type"]
)
JOBS_COMPLETED = Counter("shoal_jobs_completed_total", "Jobs that ended Completed", ["type"])
JOBS_FAILED = Counter("shoal_jobs_failed_total", "Jobs that ended Failed", ["type"])
JOBS_STOPPED = Counter("shoal_jobs_stopped_total", "Jobs stopped by a user", ["type"])
JOBS_PURGED = Counter(
    "shoal_jobs_purged_total", "Finished jobs purged with everything of theirs", ["type"]
)
SUBMIT_TO_RUNNING = Histogram(
    "shoal_job_submit_to_running_seconds",
    "From a job's submission to its first task running",
    ["type"],
    buckets=_LATENCY,
)
SUBMIT_TO_END = Histogram(
    "shoal_job_submit_to_end_seconds",
    "From a job's submission to its end (Completed, Failed or Stopped)",
    ["type"],
    buckets=_LATENCY,
)
EVALUATION_DURATION = Histogram(
    "shoal_evaluation_duration_seconds",
    "One evaluation of one job by the leader (plan and carry it out)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# Why an execution could not be placed: a closed set, so the label stays bounded.
PlacementFailure = Literal[
    "no_node_fits",  # no node passes the filters (or all are full): the job queues or fails
    "declined",  # a node declined the bid (its own policy: engine, image, path...)
    "busy",  # a node declined for want of room at that moment
    "no_answer",  # the bid timed out
    "not_listening",  # nobody listens on the node's bid subject (agent gone or reconnecting)
    "unplaceable",  # the execution cannot be made at all (a secret it names is missing)
]
PLACEMENT_FAILURES = Counter(
    "shoal_placement_failures_total",
    "Executions (or whole plans) that could not be placed, by reason",
    ["reason"],
)
for _reason in get_args(PlacementFailure):
    PLACEMENT_FAILURES.labels(reason=_reason)
HEARTBEATS = Counter("shoal_heartbeats_received_total", "Node heartbeats received")
LEASE_CHANGES = Counter(
    "shoal_lease_changes_total",
    "Times this orchestrator took or lost the scheduling lease",
)
UPDATES_APPLIED = Counter(
    "shoal_execution_updates_applied_total",
    "Execution reports from nodes applied to the state, by the state reported",
    ["state"],
)
# Every series of a bounded label made at start, at zero: a scrape shows it before its first
# event (a rate over a series that appears mid-way is wrong), and the values are allocated
# with the process rather than amid the first burst of jobs, whose freed memory they would pin.
for _kind in (*JOB_TYPES, "other"):
    for _family in (JOBS_SUBMITTED, JOBS_COMPLETED, JOBS_FAILED, JOBS_STOPPED, JOBS_PURGED):
        _family.labels(type=_kind)
    for _histogram in (SUBMIT_TO_RUNNING, SUBMIT_TO_END):
        _histogram.labels(type=_kind)
for _state in get_args(wire.ComputeState):
    UPDATES_APPLIED.labels(state=_state)


def _type(job: wire.JobRecord) -> str:
    return job.type if job.type in JOB_TYPES else "other"


def submitted(job: wire.JobRecord) -> None:
    submitted_type(job.type)


def submitted_type(kind: str) -> None:
    JOBS_SUBMITTED.labels(type=kind if kind in JOB_TYPES else "other").inc()


def started(job: wire.JobRecord, now: float | None = None) -> None:
    """The job's first task is running (observed once per job, by the leader)."""
    if job.created_at:
        elapsed = (now or time.time()) - job.created_at
        SUBMIT_TO_RUNNING.labels(type=_type(job)).observe(max(elapsed, 0.0))


def ended(job: wire.JobRecord, state: str, now: float | None = None) -> None:
    """The job reached `state` (Completed, Failed or Stopped)."""
    counter = {"Completed": JOBS_COMPLETED, "Failed": JOBS_FAILED, "Stopped": JOBS_STOPPED}.get(
        state
    )
    if counter is None:
        return
    counter.labels(type=_type(job)).inc()
    if job.created_at:
        elapsed = (now or time.time()) - job.created_at
        SUBMIT_TO_END.labels(type=_type(job)).observe(max(elapsed, 0.0))


def purged(job: wire.JobRecord) -> None:
    JOBS_PURGED.labels(type=_type(job)).inc()


def placement_failed(reason: PlacementFailure, count: int = 1) -> None:
    PLACEMENT_FAILURES.labels(reason=reason).inc(count)


# ---- state, read at scrape time ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observed:
    """What the state gauges read from one orchestrator."""

    jobs: Callable[[], Iterable[tuple[str, str]]]  # (state, type) of every job known
    nodes: Callable[[], Iterable[tuple[str, str]]]  # (connection, approval) of every node
    leading: Callable[[], bool]
    queue_depth: Callable[[], int]

    @classmethod
    def of(cls, orchestrator: Orchestrator) -> Observed:
        mirror = orchestrator.mirror
        return cls(
            jobs=lambda: [
                (v.value.state, v.value.type)
                for v in itertools.chain(list(mirror.jobs.values()), list(mirror.settled.values()))
            ],
            nodes=lambda: [
                (v.value.connection, v.value.approval) for v in list(mirror.nodes.values())
            ],
            leading=lambda: orchestrator.leading,
            queue_depth=lambda: orchestrator.broker.pending,
        )


class StateCollector(Collector):
    """shoal_jobs, shoal_nodes, shoal_leader and shoal_eval_queue_depth of the orchestrator
    observed (the first one, if a process holds several, as tests do)."""

    def __init__(self) -> None:
        self.observed: list[Observed] = []

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "shoal_jobs", "Jobs known, by state and type", labels=["state", "type"]
        )
        nodes = GaugeMetricFamily(
            "shoal_nodes",
            "Nodes known, by connection and approval",
            labels=["connection", "approval"],
        )
        leader = GaugeMetricFamily("shoal_leader", "1 while this orchestrator holds the lease")
        depth = GaugeMetricFamily(
            "shoal_eval_queue_depth", "Jobs waiting for (or in) an evaluation on the leader"
        )
        if self.observed:
            source = self.observed[0]
            by_job = Tally(source.jobs())
            for state in get_args(wire.JobState):
                for kind in JOB_TYPES:
                    jobs.add_metric([state, kind], by_job.pop((state, kind), 0))
            other = Tally[str]()  # of a type this build does not know
            for (state, _kind), n in by_job.items():
                other[state] += n
            for state, n in sorted(other.items()):
                jobs.add_metric([state, "other"], n)
            by_node = Tally(source.nodes())
            for connection in get_args(wire.Connection):
                for approval in get_args(wire.Approval):
                    nodes.add_metric([connection, approval], by_node.get((connection, approval), 0))
            leader.add_metric([], 1 if source.leading() else 0)
            depth.add_metric([], source.queue_depth())
        yield from (jobs, nodes, leader, depth)


STATE = StateCollector()
REGISTRY.register(STATE)


def observe(orchestrator: Orchestrator) -> Callable[[], None]:
    """Serve the orchestrator's state gauges; returns what stops serving them."""
    observed = Observed.of(orchestrator)
    STATE.observed.append(observed)

    def forget() -> None:
        if observed in STATE.observed:
            STATE.observed.remove(observed)

    return forget
