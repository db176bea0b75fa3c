"""Helpers for the control-plane integration tests: job specs, processes, agent state."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compute.agent import ComputeAgent
from shared import wire
from shared.client import ShoalClient
from shared.errors import ShoalError
from tests.conftest import terminate

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SHOAL = Path(sys.executable).parent / "shoal"


def noop_job(
    name: str,
    *,
    type: str = "batch",
    count: int | None = 1,
    sleep: float | str = 0,
    exit_code: int = 0,
    stdout: str = "",
    constraints: Sequence[Mapping[str, Any]] = (),
    timeouts: Mapping[str, float] | None = None,
    resources: Mapping[str, str] | None = None,
    inputs: Sequence[Mapping[str, Any]] = (),
    engine: str = "noop",
) -> dict[str, Any]:
    """A one-task job spec (as a mapping for ShoalClient.submit) running the noop engine."""
    params: dict[str, Any] = {"Sleep": sleep, "ExitCode": exit_code}
    if stdout:
        params["Stdout"] = stdout
    task: dict[str, Any] = {"Name": "main", "Engine": {"Type": engine, "Params": params}}
    if timeouts:
        task["Timeouts"] = dict(timeouts)
    if resources:
        task["Resources"] = dict(resources)
    if inputs:
        task["InputSources"] = [dict(i) for i in inputs]
    spec: dict[str, Any] = {"Name": name, "Type": type, "Tasks": [task]}
    if count is not None:
        spec["Count"] = count
    if constraints:
        spec["Constraints"] = [dict(c) for c in constraints]
    return spec


def constraint(key: str, op: str, *values: str) -> dict[str, Any]:
    return {"Key": key, "Operator": op, "Values": list(values)}


def states(view: wire.JobView) -> list[str]:
    return [e.compute_state for e in view.executions]


async def in_state(client: ShoalClient, job_id: str, *wanted: str) -> wire.JobView | None:
    """The job's view if its state is one of `wanted` (for `eventually`)."""
    view = await client.describe(job_id)
    return view if view.state in wanted else None


async def running_on_agent(client: ShoalClient, job_id: str) -> wire.JobView | None:
    """The job's view once one of its executions is reported running."""
    view = await client.describe(job_id)
    return view if any(e.compute_state == "running" for e in view.executions) else None


def agent_running(agent: ComputeAgent) -> set[str]:
    """Execution ids the agent currently runs (its private `_running` map)."""
    return set(agent._running)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Completed:
    code: int
    stdout: str
    stderr: str
    elapsed: float


async def run_cli(
    *args: str, url: str, timeout: float = 60.0, cwd: Path = REPO, env: Mapping[str, str] = {}
) -> Completed:
    """Run the `shoal` command as a subprocess without blocking the test's event loop."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    proc = await asyncio.create_subprocess_exec(
        str(SHOAL),
        *args,
        cwd=str(cwd),
        env={**os.environ, "SHOAL_NATS_URL": url, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"shoal {' '.join(args)} did not finish in {timeout}s\n"
            f"stdout: {out.decode(errors='replace')}\nstderr: {err.decode(errors='replace')}"
        ) from None
    assert proc.returncode is not None
    return Completed(
        proc.returncode,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        loop.time() - started,
    )


class OrchestratorProcess:
    """`shoal orchestrator` as a child process, for crash (SIGKILL) tests."""

    def __init__(self, url: str, logdir: Path, name: str = "orchestrator") -> None:
        self.url = url
        self.logdir = logdir
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        with (
            (self.logdir / f"{self.name}.out").open("ab") as out,
            (self.logdir / f"{self.name}.err").open("ab") as err,
        ):
            self.proc = await asyncio.create_subprocess_exec(
                str(SHOAL),
                "--nats",
                self.url,
                "orchestrator",
                "--heartbeat-interval",
                "0.2",
                "--disconnect-timeout",
                "2",
                stdout=out,
                stderr=err,
            )

    def logs(self) -> str:
        parts = []
        for suffix in ("out", "err"):
            path = self.logdir / f"{self.name}.{suffix}"
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, like a crashed host."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        await terminate(proc, grace=10)


@contextlib.asynccontextmanager
async def orchestrator_process(url: str, logdir: Path) -> AsyncIterator[OrchestratorProcess]:
    proc = OrchestratorProcess(url, logdir)
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()


async def api_ready(client: ShoalClient) -> bool:
    """True once some orchestrator answers the API."""
    try:
        await client.nodes()
    except ShoalError:
        return False
    return True


class _BlackHole:
    """Stands in for a crashed agent's connection: everything sent is silently lost."""

    connected = False

    async def js_publish(self, *args: object, **kwargs: object) -> int:
        return 0

    async def publish(self, *args: object, **kwargs: object) -> None:
        return None

    async def unsubscribe(self, *args: object) -> None:
        return None


def _orphan_reports() -> list[asyncio.Task[Any]]:
    me = asyncio.current_task()
    return [
        t
        for t in asyncio.all_tasks()
        if t is not me and not t.done() and "_report" in getattr(t.get_coro(), "__qualname__", "")
    ]


async def crash_agent(stack: Any, name: str) -> ComputeAgent:
    """A crash of an in-process agent: its connection drops and nothing it sends arrives.

    Unlike `Stack.kill_agent`, it cannot hang on an execution's final report (that report
    would need the connection that just died; a crashed process never sends it either).
    """
    agent: ComputeAgent = stack.agents.pop(name)
    real_bus = agent.bus
    await real_bus.close()
    agent.bus = _BlackHole()  # type: ignore[assignment]
    async with asyncio.timeout(10):
        await agent.stop()
        await settle_orphans()
    agent.bus = real_bus
    return agent


async def settle_orphans(timeout: float = 10.0) -> None:
    """Wait for shielded `_report` retries left behind by a cancelled stop (they finish once
    the agent's bus is a black hole)."""
    orphans = _orphan_reports()
    if orphans:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*orphans, return_exceptions=True)


async def pause_heartbeats(agent: ComputeAgent) -> None:
    """A network partition as the orchestrator sees it: the agent keeps running its work but
    its heartbeats stop (the heartbeat task is cancelled)."""
    name = f"{agent.node_id}-heartbeat"
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == name and not t.done()]
    assert tasks, f"no heartbeat task {name}"
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def resume_heartbeats(agent: ComputeAgent) -> None:
    """The partition heals: heartbeats (and a fresh hello) resume."""
    agent._children.spawn(agent._heartbeats(), name=f"{agent.node_id}-heartbeat")


async def consistently(
    check: Any, *, duration: float = 2.0, interval: float = 0.05, what: str = "condition"
) -> None:
    """`check()` (sync or async) stays truthy for `duration` seconds: the converse of
    `eventually`, for asserting that something does NOT happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        assert result, f"{what} stopped holding"
        if loop.time() >= deadline:
            return
        await asyncio.sleep(interval)
