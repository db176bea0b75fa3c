"""The compute agent's Prometheus metrics: execution, input-fetch and publish durations observed
where they happen, and running executions and capacity read from the agents at scrape time.

All live in prometheus_client's default registry (what `/metrics` of shared/probes.py serves).
A process hosting several (virtual) nodes reports their sum. Labels have bounded values only
(an engine, an outcome, a source or publisher type): never a job, execution or node id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared import wire

_DURATION = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
_TRANSFER = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
OUTCOMES = ("completed", "failed", "cancelled")

EXECUTION_DURATION = Histogram(
    "shoal_agent_execution_duration_seconds",
    "One execution on this node, from its start to its final report, by engine and outcome",
    ["engine", "outcome"],
    buckets=_DURATION,
)
INPUT_FETCH = Histogram(
    "shoal_agent_input_fetch_seconds",
    "Preparing one input source of an execution, by source type",
    ["kind"],
    buckets=_TRANSFER,
)
PUBLISH = Histogram(
    "shoal_agent_publish_seconds",
    "Packing and publishing one execution's results, by publisher type",
    ["kind"],
    buckets=_TRANSFER,
)


def execution_ended(engine: str, outcome: str, seconds: float) -> None:
    outcome = outcome if outcome in OUTCOMES else "failed"
    EXECUTION_DURATION.labels(engine=engine, outcome=outcome).observe(max(seconds, 0.0))


@contextmanager
def timed(histogram: Histogram, kind: str) -> Iterator[None]:
    """Observe how long the block took (whether or not it raised) under label `kind`."""
    began = time.monotonic()
    try:
        yield
    finally:
        histogram.labels(kind=kind).observe(time.monotonic() - began)


# ---- state, read at scrape time ---------------------------------------------------------------


class Agent(Protocol):
    """What the gauges read from one compute agent (compute/agent.py's ComputeAgent)."""

    @property
    def running_count(self) -> int: ...

    capacity: wire.Capacity

    def free(self) -> wire.Capacity: ...


class AgentCollector(Collector):
    """shoal_agent_running_executions and shoal_agent_capacity_*: the agents of this process,
    summed."""

    def __init__(self) -> None:
        self.agents: list[Agent] = []

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            "shoal_agent_running_executions", "Executions running on this process's nodes"
        )
        cpu = GaugeMetricFamily(
            "shoal_agent_capacity_cpu_millis",
            "CPU (millicores) of this process's nodes: total, used by executions, free",
            labels=["kind"],
        )
        memory = GaugeMetricFamily(
            "shoal_agent_capacity_memory_bytes",
            "Memory (bytes) of this process's nodes: total, used by executions, free",
            labels=["kind"],
        )
        if self.agents:
            agents = list(self.agents)
            total = [a.capacity for a in agents]
            free = [a.free() for a in agents]
            running.add_metric([], sum(a.running_count for a in agents))
            for family, field in ((cpu, "cpu_millis"), (memory, "memory_bytes")):
                whole = sum(getattr(c, field) for c in total)
                left = sum(getattr(c, field) for c in free)
                family.add_metric(["total"], whole)
                family.add_metric(["used"], whole - left)
                family.add_metric(["free"], left)
        yield from (running, cpu, memory)


AGENTS = AgentCollector()
REGISTRY.register(AGENTS)


def observe(agent: Agent) -> Callable[[], None]:
    """Count the agent in the gauges; returns what stops counting it."""
    AGENTS.agents.append(agent)

    def forget() -> None:
        if agent in AGENTS.agents:
            AGENTS.agents.remove(agent)

    return forget
