"""The engine contract: what an engine is given to run a task, and what it gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shared.spec.params import Params


@dataclass(frozen=True, slots=True)
class Mount:
    """A host path made visible to the task at `target`."""

    host_path: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True, slots=True)
class RunRequest:
    """Everything an engine needs; prepared by the executor (inputs fetched, dirs created).

    The engine writes the task's output to `stdout_path` / `stderr_path` as it is produced:
    the executor tails those files into the log stream, so every engine gets live logs free.
    Cancellation is asyncio cancellation of `Engine.run`; the engine must stop the task then.
    """

    execution_id: str
    job_id: str
    params: Params
    workdir: Path
    stdout_path: Path
    stderr_path: Path
    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    memory_bytes: int | None = None
    cpu_millis: int | None = None
    timeout: float | None = None
    network: str = "none"
    domains: tuple[str, ...] = ()
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class RunResult:
    """How the task ended. `error` is set when the task did not exit on its own."""

    exit_code: int
    error: str = ""
    timed_out: bool = False
    oom: bool = False


class Engine(Protocol):
    """A way of running tasks. `probe()` says whether this machine can run it at all.

    An engine may set `writes_files = False` when it makes the output files' directory itself
    if it writes any; by default the executor makes the working directory first."""

    name: str

    async def probe(self) -> bool: ...

    async def run(self, request: RunRequest) -> RunResult: ...
