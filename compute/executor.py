"""One execution on this node: prepare inputs, run the engine, ship logs, report the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from compute import metrics
from compute.engines.base import Engine, Mount, RunRequest, RunResult
from compute.inputs import AllowedPath, prepare
from compute.logs import LogShipper
from compute.publishers import Publisher
from compute.task_env import task_environment, without_reserved
from shared import trace, wire
from shared.errors import ExecutionFailed, ShoalError
from shared.results import pack
from shared.spec import JobSpec
from shared.spec.params import ENGINE_PARAMS

log = logging.getLogger(__name__)

Report = Callable[[wire.ExecutionUpdate], Awaitable[None]]

# A batch or ops task is reported "running" once it has run this long: one that ends sooner is
# reported once, with its start time, which saves the orchestrator a state write per short
# task. Daemon and service tasks are meant to keep running: they are reported at once.
RUNNING_HOLDBACK = 0.05


@dataclass(slots=True)
class Execution:
    order: wire.ExecutionOrder
    spec: JobSpec
    cancel_reason: str = ""
    # The opened secrets of the task's Env, by variable (compute/task_env.open_secrets): never
    # shown, not even in a repr in a traceback.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


async def run_execution(
    execution: Execution,
    *,
    node_id: str,
    engine: Engine,
    workdir: Path,
    allowed: tuple[AllowedPath, ...],
    report: Report,
    ship_logs: Callable[[Path, str], LogShipper],
    publisher: Publisher | None = None,
    keep_workdir: bool = False,
) -> None:
    order = execution.order
    began = time.monotonic()
    engine_type = execution.spec.task.engine.type

    def update(
        state: wire.ComputeState,
        result: RunResult | None = None,
        error: str = "",
        retryable: bool = True,
        started_at: float = 0.0,
    ) -> wire.ExecutionUpdate:
        return wire.ExecutionUpdate(
            execution_id=order.execution_id,
            job_id=order.job_id,
            node_id=node_id,
            state=state,
            exit_code=result.exit_code if result else None,
            error=error or (result.error if result else ""),
            retryable=retryable,
            timed_out=bool(result and result.timed_out),
            at=time.time(),
            started_at=started_at,
        )

    task = execution.spec.task
    if engine.writes_files or task.input_sources or publisher is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    # else nothing will be written (a noop task, unless it prints): no directory to make and
    # remove, two metadata writes per execution a busy node is spared.
    # The engine creates the output files; a task that prints nothing leaves none to ship.
    stdout, stderr = workdir / "stdout", workdir / "stderr"
    shippers = [ship_logs(stdout, "stdout"), ship_logs(stderr, "stderr")]
    finished = False
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.TaskGroup() as group:
            # Tailing starts one interval in: a task that ends sooner (most noop and many
            # wasm tasks) has its output shipped once, at its end, and costs no tail tasks.
            tails = loop.call_later(
                shippers[0].interval, lambda: [group.create_task(s.follow()) for s in shippers]
            )
            try:
                final = await _run(
                    execution, node_id, engine, workdir, allowed, report, update, stdout, stderr
                )
            finally:
                tails.cancel()
                for s in shippers:
                    s.stop()
        # A task that wrote nothing left no directory: one stat instead of one per stream,
        # and nothing to remove.
        wrote = workdir.is_dir()
        if wrote:
            for s in shippers:  # whatever was written after the last tick
                await s.ship()
        if publisher is not None and final.exit_code is not None:
            final = await _publish(final, execution, workdir, publisher)
        finished = True
    except asyncio.CancelledError:
        for s in shippers:
            with contextlib.suppress(ShoalError, OSError):
                await asyncio.shield(s.ship())
        metrics.execution_ended(engine_type, "cancelled", time.monotonic() - began)
        why = execution.cancel_reason or "the compute agent stopped"
        state: wire.ComputeState = "cancelled"  # not the task's fault: never an attempt
        await asyncio.shield(report(update(state, error=why, retryable=True)))
        raise
    finally:
        if not finished and not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    metrics.execution_ended(engine_type, final.state, time.monotonic() - began)
    try:
        await report(final)  # first: the orchestrator waits for this, not for the clean-up
    finally:
        if wrote and not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


async def _publish(
    final: wire.ExecutionUpdate, execution: Execution, workdir: Path, publisher: Publisher
) -> wire.ExecutionUpdate:
    names = [r.name for r in execution.spec.task.result_paths]
    try:
        with metrics.timed(metrics.PUBLISH, publisher.name):
            archive = pack(workdir, names, final.exit_code)
            ref = await publisher.publish(archive, execution.order, execution.spec)
    except ShoalError as exc:
        return msgspec.structs.replace(
            final,
            state="failed",
            retryable=True,
            error=f"publishing results to {publisher.name} failed: {exc}",
        )
    except OSError as exc:
        return msgspec.structs.replace(
            final, state="failed", retryable=True, error=f"packing results failed: {exc}"
        )
    return msgspec.structs.replace(final, result=ref)


async def _run(
    execution: Execution,
    node_id: str,
    engine: Engine,
    workdir: Path,
    allowed: tuple[AllowedPath, ...],
    report: Report,
    update: Callable[..., wire.ExecutionUpdate],
    stdout: Path,
    stderr: Path,
) -> wire.ExecutionUpdate:
    spec, task = execution.spec, execution.spec.task
    try:
        mounts = await prepare(task.input_sources, workdir, allowed)
        for result_path in task.result_paths:
            out = workdir / "outputs" / result_path.name
            out.mkdir(parents=True, exist_ok=True)
            mounts.append(Mount(out, result_path.path, read_only=False))
        params_model = ENGINE_PARAMS[task.engine.type]
        timeout = task.timeouts.execution_timeout if spec.type in ("batch", "ops") else 0
        order = execution.order
        request = RunRequest(
            execution_id=order.execution_id,
            job_id=order.job_id,
            params=without_reserved(params_model.model_validate(task.engine.params), order),
            workdir=workdir,
            stdout_path=stdout,
            stderr_path=stderr,
            env=task_environment(order, spec, node_id, execution.secrets),
            mounts=tuple(mounts),
            memory_bytes=task.resources.memory_bytes or None,
            cpu_millis=task.resources.cpu_millis or None,
            gpus=task.resources.gpus,
            timeout=timeout or None,
            network=task.network.type,
            domains=tuple(task.network.domains),
        )
        started = time.time()
        holdback = RUNNING_HOLDBACK if spec.type in ("batch", "ops") else 0.0
        loop = asyncio.get_running_loop()
        running: asyncio.Future[None] | None = None

        def announce() -> None:
            nonlocal running
            running = asyncio.ensure_future(report(update("running")))

        # A timer, not a sleeping task: most short tasks end before it fires. The outcome is
        # only reported after "running" (when sent) is, so the orchestrator sees them in order.
        timer = loop.call_later(holdback, announce) if holdback else None
        if timer is None:
            announce()
        try:
            trace.mark("agent.started", execution.order.job_id)
            result = await engine.run(request)
            trace.mark("agent.ended", execution.order.job_id)
        finally:
            if timer is not None:
                timer.cancel()
            if running is not None:
                await asyncio.shield(running)
        if running is None:  # ended within the hold-back: the outcome says when it started
            update = functools.partial(update, started_at=started)
    except ExecutionFailed as exc:
        return update("failed", error=str(exc), retryable=exc.retryable)
    except ShoalError as exc:
        return update("failed", error=str(exc), retryable=True)
    except OSError as exc:
        return update("failed", error=f"could not prepare the task: {exc}", retryable=True)
    if result.exit_code == 0 and not result.error:
        return update("completed", result)
    error = result.error or f"exit code {result.exit_code}"
    if result.oom:
        error = f"out of memory ({error})"
    return update("failed", result, error=error, retryable=True)
