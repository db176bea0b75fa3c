"""The parsed specs of the jobs the planner evaluates: a small cache, most recently used first.

A job's spec is stored once, as bytes in its record (which the mirror holds while the job is
unsettled). Parsed, it is an object graph many times that size, so a burst of submitted
jobs each holding one until it ended was most of the orchestrator's memory in the burst, and
CPython keeps a process's peak for good (a few live objects keep each arena of it). Bounded,
a burst costs a parse per evaluation past the bound, which is far less than the evaluation.
"""

from __future__ import annotations

from collections import OrderedDict

from shared import wire
from shared.spec import JobSpec, spec_from_canonical

# Several times the evaluations the broker runs at once, so a job being evaluated, or one
# evaluated again a moment later (its execution came up, or ended), is parsed once.
LIMIT = 256


class SpecCache:
    """Parsed specs by (job id, version), checked against the stored bytes."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._specs: OrderedDict[tuple[str, int], tuple[bytes, JobSpec]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._specs)

    def remember(self, job: wire.JobRecord, spec: JobSpec) -> None:
        """The API validated this spec a moment ago: no need to parse it again."""
        self._put((job.id, job.version), bytes(job.spec), spec)

    def spec_of(self, job: wire.JobRecord) -> JobSpec:
        # Keyed by the spec's bytes too: a submit that lost its create to another one of the
        # same id and version was remembered, and must not stand in for the stored spec.
        key, raw = (job.id, job.version), bytes(job.spec)
        cached = self._specs.get(key)
        if cached is not None and cached[0] == raw:
            self._specs.move_to_end(key)
            return cached[1]
        spec = spec_from_canonical(raw)
        self._put(key, raw, spec)
        return spec

    def forget(self, job: wire.JobRecord) -> None:
        self._specs.pop((job.id, job.version), None)

    def _put(self, key: tuple[str, int], raw: bytes, spec: JobSpec) -> None:
        self._specs[key] = (raw, spec)
        self._specs.move_to_end(key)
        while len(self._specs) > self.limit:
            self._specs.popitem(last=False)
