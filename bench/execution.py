"""The compute agent's own cost of one trivial execution, without NATS: `run_execution` of a
noop task that writes nothing, reported to a function that drops the report.

.venv/bin/python -m bench.execution [N]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from cli.common import run
from compute.engines.noop import NoopEngine
from compute.executor import Execution, run_execution
from compute.logs import LogShipper
from shared import wire
from shared.spec.loader import spec_from_data

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000  # per figure


class _NoBus:
    """Where the log shippers would publish: a noop task that prints nothing never does."""

    async def js_publish(self, subject: str, data: bytes) -> int:
        raise AssertionError("nothing should be shipped")


async def main() -> None:
    spec = spec_from_data({"Type": "batch", "Tasks": [{"Engine": {"Type": "noop"}}]})
    order = wire.ExecutionOrder(
        execution_id="e-1",
        job_id="j-1",
        job_type="batch",
        spec=msgspec.Raw(json.dumps(spec.dump()).encode()),
    )
    engine, bus = NoopEngine(), _NoBus()

    async def report(update: wire.ExecutionUpdate) -> None:
        assert update.state == "completed", update

    with tempfile.TemporaryDirectory(prefix="shoal-execution-") as tmp:
        for _ in range(3):
            cpu = time.process_time()
            for i in range(N):
                await run_execution(
                    Execution(order, spec),
                    node_id="n",
                    engine=engine,
                    workdir=Path(tmp) / f"e-{i}",
                    allowed=(),
                    report=report,
                    ship_logs=lambda path, stream: LogShipper(
                        bus,  # type: ignore[arg-type]
                        path,
                        "j-1",
                        "e-1",
                        stream,
                        limit=1024,
                    ),
                )
            per = (time.process_time() - cpu) / N * 1e6
            print(f"run_execution of a noop task: {per:6.1f} us CPU each ({N} in a row)")


if __name__ == "__main__":
    run(main())
