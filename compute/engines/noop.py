"""The noop engine: prints what it is told, sleeps, and exits with the code it is given."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from compute.engines.base import Engine, RunRequest, RunResult
from shared.errors import ExecutionFailed
from shared.spec.params import NoopParams


class NoopEngine(Engine):
    """Stands in for a real engine in tests and benchmarks; runs on every machine.

    A non-empty `Error` makes the run raise ExecutionFailed (not retryable) after the sleep,
    the way a real engine reports a task it could not run at all.
    """

    name = "noop"
    writes_files = False  # only when told to print: then _append makes the directory

    async def probe(self) -> bool:
        return True

    async def run(self, request: RunRequest) -> RunResult:
        params = request.params
        if not isinstance(params, NoopParams):
            raise ExecutionFailed(
                f"noop engine given {type(params).__name__}, not NoopParams", retryable=False
            )
        # A few bytes: writing them inline costs less than a thread hop.
        if params.stdout:
            _append(request.stdout_path, params.stdout)
        if params.stderr:
            _append(request.stderr_path, params.stderr)
        duration = math.inf if params.forever else float(params.sleep)
        if request.timeout is not None and request.timeout < duration:
            await asyncio.sleep(request.timeout)
            return RunResult(
                exit_code=-1,
                error=f"execution timed out after {request.timeout:g}s",
                timed_out=True,
            )
        if math.isinf(duration):
            await asyncio.get_running_loop().create_future()  # until cancelled
        elif duration > 0:
            await asyncio.sleep(duration)
        if params.error:
            raise ExecutionFailed(params.error, retryable=False)
        return RunResult(exit_code=params.exit_code)


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as stream:
        stream.write(text)
