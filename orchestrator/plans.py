"""What a scheduler decides from and what it decides: the Context, the Plan and its parts.

Plain data and a few pure helpers shared by the schedulers (`scheduler.py`) and placement
(`placing.py`); the planner carries a Plan out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from orchestrator.selection import NodeState
from shared import wire
from shared.spec import JobSpec

RETRY_BASE_DELAY = 1.0
RETRY_MAX_DELAY = 60.0
K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class Placement:
    partition: int
    node_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Stop:
    """End an execution: `state` is the compute state to record (lost, cancelled)."""

    execution_id: str
    state: wire.ComputeState
    reason: str


@dataclass(slots=True)
class Plan:
    place: list[Placement] = field(default_factory=list)
    stop: list[Stop] = field(default_factory=list)
    state: wire.JobState | None = None
    message: str = ""
    queued_since: float | None = None
    evaluate_at: float | None = None  # re-evaluate then (backoff, queue or total timeout)

    def wake(self, at: float) -> None:
        self.evaluate_at = at if self.evaluate_at is None else min(self.evaluate_at, at)


@dataclass(frozen=True, slots=True)
class Context:
    job: wire.JobRecord
    spec: JobSpec
    executions: list[wire.ExecutionRecord]
    nodes: Mapping[str, NodeState]  # may be the registry's own table: read, never kept
    now: float
    refused: dict[int, frozenset[str]] = field(default_factory=dict)  # partition -> nodes
    declined_busy: frozenset[str] = frozenset()  # of those, the ones that had no room then
    # `nodes` and `executions` are only some nodes' and what runs there (a daemon job when
    # nodes join or leave): decide for those, say nothing about the job as a whole.
    scoped: bool = False


def backoff(failures: int) -> float:
    return float(min(RETRY_BASE_DELAY * 2.0 ** max(failures - 1, 0), RETRY_MAX_DELAY))


def ran(e: wire.ExecutionRecord) -> bool:
    """Whether the task started: its node reported it running, or it ended with an exit code."""
    return e.compute_state in ("running", "completed") or e.exit_code is not None


def grouped(
    executions: list[wire.ExecutionRecord], key: Callable[[wire.ExecutionRecord], K]
) -> dict[K, list[wire.ExecutionRecord]]:
    """Executions by `key`, in their order: one pass, where a scan per partition or per node
    made an evaluation quadratic (a daemon on 10,000 nodes after a restart of them all)."""
    out: dict[K, list[wire.ExecutionRecord]] = {}
    for e in executions:
        out.setdefault(key(e), []).append(e)
    return out


def refusals(executions: list[wire.ExecutionRecord]) -> dict[tuple[int, str], str]:
    """What each node said when it last declined a partition's bid, by (partition, node):
    the words of the `rejected` records the planner wrote from the nodes' replies."""
    said: dict[tuple[int, str], tuple[float, str]] = {}
    for e in executions:
        if e.compute_state != "rejected":
            continue
        key = (e.partition, e.node_id)
        known = said.get(key)
        if known is None or e.updated_at >= known[0]:
            said[key] = (e.updated_at, e.error)
    return {key: text for key, (_, text) in said.items()}
