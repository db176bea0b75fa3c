"""The engine contract: what an engine is given to run a task, and what it gives back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

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

    `env` is the task's whole environment: its `Env` with Shoal's own variables over it
    (`compute/task_env.py`: partition, job, execution, node). An engine puts its params'
    `EnvironmentVariables` over `env`; the executor has already taken out of them any entry
    named like one of Shoal's variables, so the engine needs no rule of its own.
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


class Engine(ABC):
    """A way of running tasks. `probe()` says whether this machine can run it at all.

    Beyond `probe` and `run`, an engine has a few abilities whose defaults here fit an engine
    that lacks them, so the agent and the executor call them on every engine alike."""

    name: ClassVar[str]
    # False for an engine that makes the output files' directory itself if it writes any: the
    # executor then makes no working directory that nothing else needs.
    writes_files: ClassVar[bool] = True
    # True for an engine whose tasks name an image: a node that does not pull
    # (--image-pull never) asks has_image() at bid time; one that pulls fetches the image as
    # the first step of the run.
    runs_images: ClassVar[bool] = False

    @abstractmethod
    async def probe(self) -> bool: ...

    @abstractmethod
    async def run(self, request: RunRequest) -> RunResult: ...

    async def has_image(self, image: str) -> bool:
        """Whether `image` is on this machine; asked only of engines that set `runs_images`."""
        return True

    async def cleanup(self, keep: set[str]) -> int:
        """Remove what a crashed run of this node left running, except the executions in
        `keep`; how many went."""
        return 0

    async def close(self) -> None:
        """Let go of what the engine holds (connections, background tasks); after its last run."""
        return None  # an engine that holds nothing between runs
