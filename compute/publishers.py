"""Publishers: where an execution's result archive goes once the task has ended."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

from shared import results, subjects, wire
from shared.bus import Bus, ObjectStore
from shared.spec import JobSpec


class Publisher(Protocol):
    name: str

    async def publish(
        self, archive: Path, order: wire.ExecutionOrder, spec: JobSpec
    ) -> wire.ResultRef: ...


class NatsPublisher:
    """The default: this node's own object store bucket `shoal-results-node-<node-id>`, from
    which the orchestrator copies the archive into its job's namespace bucket (the one users
    read) when it applies the execution's final report."""

    name = "nats"

    def __init__(self, bus: Bus, node_id: str = "") -> None:
        self._bus = bus
        # Without the node id (an agent wired before issue 20) the shared bucket of old, which
        # the orchestrator still copies from while nodes are upgraded.
        self.bucket = results.node_bucket(node_id) if node_id else results.LEGACY_BUCKET
        self._store: ObjectStore | None = None

    async def publish(
        self, archive: Path, order: wire.ExecutionOrder, spec: JobSpec
    ) -> wire.ResultRef:
        if self._store is None:  # opening costs a round trip; the bucket does not move
            # Created on first use, with the storage settings of every Shoal object store.
            self._store = await self._bus.object_store(self.bucket)
        store = self._store
        name = f"{order.job_id}/{order.execution_id}/{archive.name}"
        size = await store.put_file(name, str(archive))
        return wire.ResultRef(publisher="nats", location=name, size=size)


class LocalPublisher:
    """Kept on this node's disk; `shoal job get` fetches it through NATS from the node."""

    name = "local"

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = results_dir

    def path_of(self, execution_id: str) -> Path:
        return self.results_dir / f"{subjects.check_token(execution_id, 'execution id')}.tar.gz"

    async def publish(
        self, archive: Path, order: wire.ExecutionOrder, spec: JobSpec
    ) -> wire.ResultRef:
        self.results_dir.mkdir(parents=True, exist_ok=True)
        dest = self.path_of(order.execution_id)
        shutil.copyfile(archive, dest)
        return wire.ResultRef(publisher="local", location=str(dest), size=dest.stat().st_size)


class NoopPublisher:
    name = "noop"

    async def publish(
        self, archive: Path, order: wire.ExecutionOrder, spec: JobSpec
    ) -> wire.ResultRef:
        return wire.ResultRef(publisher="noop")
