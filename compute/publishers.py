"""Publishers: where an execution's result archive goes once the task has ended."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

from shared import subjects, wire
from shared.bus import Bus, ObjectStore
from shared.spec import JobSpec


class Publisher(Protocol):
    name: str

    async def publish(
        self, archive: Path, order: wire.ExecutionOrder, spec: JobSpec
    ) -> wire.ResultRef: ...


class NatsPublisher:
    """The default: the JetStream object store `shoal-results`, readable from anywhere."""

    name = "nats"

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._store: ObjectStore | None = None

    async def publish(
        self, archive: Path, order: wire.ExecutionOrder, spec: JobSpec
    ) -> wire.ResultRef:
        if self._store is None:  # opening costs a round trip; the bucket does not move
            self._store = await self._bus.object_store(subjects.RESULTS_STORE)
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
