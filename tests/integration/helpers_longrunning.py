"""Helpers for the daemon/service/update tests: specs, views, rollout sampling, agent processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.service import OrchestratorConfig
from shared import wire
from shared.client import ShoalClient
from shared.errors import ShoalError
from tests.conftest import terminate
from tests.integration.helpers_jobs import SHOAL, noop_job
from tests.integration.stack import FAST, Stack


class LongStack(Stack):
    """A Stack that stops the orchestrator first, and gets it unstuck if it hangs.

    Long-running executions still run at teardown. Stopping the agents first (the plain
    Stack's order) makes them report a burst of updates while the orchestrator is cancelled,
    which hits the shutdown hang documented by
    `test_daemon.py::test_orchestrator_stop_returns_while_updates_flow`; a rollout still in
    flight at teardown can hit it too. Until that is fixed, re-cancel what swallowed the
    cancellation rather than let every such test hang for its whole timeout.
    """

    async def close(self) -> None:
        if self.orchestrator is not None:
            stopping = asyncio.ensure_future(self.stop_orchestrator())
            while not (await asyncio.wait([stopping], timeout=1.0))[0]:
                print("LongStack: Orchestrator.stop() is stuck; cancelling its loops again")
                for task in asyncio.all_tasks():
                    if task.cancelling() and task not in (stopping, asyncio.current_task()):
                        task.cancel()
            stopping.result()
        await super().close()


@contextlib.asynccontextmanager
async def long_stack(
    url: str, tmp: Path, agents: int = 2, config: OrchestratorConfig = FAST, **agent_kwargs: Any
) -> AsyncIterator[LongStack]:
    s = LongStack(url, tmp)
    try:
        await s.start_orchestrator(config)
        for i in range(agents):
            await s.add_agent(f"node-{i}", **agent_kwargs)
        yield s
    finally:
        await s.close()


def forever(name: str, *, type: str, count: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """A noop job that runs until stopped (`Sleep: forever`)."""
    return noop_job(name, type=type, count=count, sleep="forever", **kwargs)


def running(executions: Iterable[wire.ExecutionView]) -> list[wire.ExecutionView]:
    return [e for e in executions if e.compute_state == "running"]


def live(executions: Iterable[wire.ExecutionView]) -> list[wire.ExecutionView]:
    return [e for e in executions if e.compute_state in wire.LIVE_COMPUTE_STATES]


def running_nodes(executions: Iterable[wire.ExecutionView]) -> list[str]:
    """Node ids of the running executions, sorted (duplicates kept)."""
    return sorted(e.node_id for e in running(executions))


async def running_on(client: ShoalClient, job_id: str, node_id: str) -> wire.ExecutionView | None:
    """The job's current-version execution running on `node_id`, if any (for `eventually`)."""
    view = await client.describe(job_id)
    found = [e for e in running(view.executions) if e.node_id == node_id]
    return found[0] if found else None


async def node_connection(client: ShoalClient, node_id: str, wanted: str) -> bool:
    try:
        return (await client.node(node_id)).connection == wanted
    except ShoalError:
        return False


@dataclass
class Sample:
    at: float
    running: int
    live: int
    running_ids: frozenset[str]


@contextlib.asynccontextmanager
async def sampling(
    client: ShoalClient, job_id: str, interval: float = 0.05
) -> AsyncIterator[list[Sample]]:
    """Poll `client.executions(job)` every ~50 ms in the background while the body runs;
    the yielded list fills with samples (running and live execution counts)."""
    samples: list[Sample] = []
    done = asyncio.Event()

    async def poll() -> None:
        while not done.is_set():
            execs = await client.executions(job_id)
            samples.append(
                Sample(
                    time.monotonic(),
                    len(running(execs)),
                    len(live(execs)),
                    frozenset(e.id for e in running(execs)),
                )
            )
            with contextlib.suppress(TimeoutError):  # the sampling period
                async with asyncio.timeout(interval):
                    await done.wait()

    # Ended by an event, not cancel(): a request's reply racing a cancellation can swallow
    # it (asyncio.wait_for on 3.11), and the loop would then never end.
    task = asyncio.create_task(poll())
    try:
        yield samples
    finally:
        done.set()
        await task  # re-raises a failure of the sampler itself


def history_counts(events: Iterable[wire.JobEvent], since: float) -> list[tuple[float, int, int]]:
    """Replay a job's history: (time, running, live) after every execution event from `since`.

    Exact where a 50 ms sampler is not: the noop engine runs at once, so a whole rollout can
    take less time than two samples. The counts are the orchestrator's view (an execution
    stops counting when it is recorded cancelled, before its node actually stops it).
    """
    run: set[str] = set()
    alive: set[str] = set()
    out: list[tuple[float, int, int]] = []
    for e in sorted(events, key=lambda e: e.at):
        if e.kind != "execution":
            continue
        if e.state in wire.LIVE_COMPUTE_STATES:
            alive.add(e.execution_id)
        if e.state == "running":
            run.add(e.execution_id)
        elif e.state in wire.TERMINAL_COMPUTE_STATES:
            run.discard(e.execution_id)
            alive.discard(e.execution_id)
        if e.at >= since:
            if not out:
                out.append((since, len(run), len(alive)))
            out.append((e.at, len(run), len(alive)))
    return out


class AgentProcess:
    """`shoal compute` as a child process, so a test can SIGKILL or SIGSTOP a real agent."""

    def __init__(
        self, url: str, name: str, tmp: Path, *, labels: Sequence[str] = (), boot: int = 0
    ) -> None:
        self.url = url
        self.name = name
        self.tmp = tmp
        self.labels = labels
        self.proc: asyncio.subprocess.Process | None = None
        self.paused = False
        self._boot = boot

    @property
    def logfile(self) -> Path:
        return self.tmp / f"{self.name}.{self._boot}.log"

    async def start(self) -> None:
        self._boot += 1
        self.tmp.mkdir(parents=True, exist_ok=True)
        args = [
            "--nats",
            self.url,
            "compute",
            "--name",
            self.name,
            "--heartbeat-interval",
            "0.2",
            "--engines",
            "noop",
            "--state-dir",
            str(self.tmp / "state"),
        ]
        for label in self.labels:
            args += ["--label", label]
        with self.logfile.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(SHOAL), *args, stdout=log, stderr=log, env={**os.environ}
            )

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.tmp.glob(f"{self.name}.*.log"))
        )

    async def kill(self) -> None:
        """SIGKILL: no goodbye, no final reports, like a host losing power."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the process (and its TCP connection) stays, but it says nothing."""
        assert self.proc is not None and self.proc.returncode is None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if self.paused:
            self.resume()
        await terminate(proc, grace=10)


@contextlib.asynccontextmanager
async def agent_process(
    url: str, name: str, tmp: Path, *, labels: Sequence[str] = ()
) -> AsyncIterator[AgentProcess]:
    proc = AgentProcess(url, name, tmp, labels=labels)
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()
