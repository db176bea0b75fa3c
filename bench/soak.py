"""`python -m bench soak`: orchestrator memory, job list, restart and retention over many jobs.

N trivial jobs (noop, one output line, a result archive) in waves; after each wave the
orchestrator's RSS and the time `job list` takes. Then the orchestrator is restarted over the N
stored finished jobs, timed until its API answers and until it schedules a new job. Then it is
restarted with a short retention over that backlog, every job due at once: the time until
JetStream holds none of the jobs' records, versions, history, logs or results, and its RSS then.
Last a fresh orchestrator with that retention runs N more jobs in waves, each purged a retention
after it ends (the issue's target): the time from the last end until JetStream holds nothing of
them, and its RSS then against its own at the start. The orchestrator runs as its own process
(`python -m bench.soak --serve`, an Orchestrator with the given retention), so its RSS is its own,
on the allocator asked for (bench/allocator.py); on SIGUSR1 it reports CPython's arenas
(bench/arenas.py), read at the start of the last phase and after its purge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.allocator import allocator_env, loaded
from bench.arenas import read_reports, write_report
from bench.procs import Child, mib
from bench.report import Row
from bench.stack import ShoalStack, StackConfig
from shared import subjects, wire
from shared.bus import Bus, Message
from shared.client import ShoalClient
from shared.errors import ShoalError

SOAK_JOB: dict[str, Any] = {
    "Type": "batch",
    "Tasks": [
        {"Engine": {"Type": "noop", "Params": {"Stdout": "soak\n"}}, "Publisher": {"Type": "nats"}}
    ],
}
# What JetStream holds of the jobs: streams whose messages all belong to them.
JOB_STREAMS = (
    f"KV_{subjects.JOBS_BUCKET}",
    f"KV_{subjects.EXECUTIONS_BUCKET}",
    f"KV_{subjects.JOB_VERSIONS_BUCKET}",
    subjects.EVENTS_STREAM,
    subjects.LOGS_STREAM,
    "OBJ_shoal-results-ns-default",
)


class SoakStack(ShoalStack):
    """A ShoalStack whose orchestrator is `python -m bench.soak --serve` with a retention."""

    retention = 0.0
    allocator = "pymalloc"

    def start_orchestrator(self, retention: float) -> Child:
        self.retention = retention
        self.orchestrator = Child(
            f"orchestrator-{retention:g}-{time.monotonic_ns()}",
            [
                sys.executable,
                "-m",
                "bench.soak",
                "--serve",
                self.url,
                "--retention",
                str(retention),
                "--arenas",
                str(self.arenas_path()),
            ],
            self.logs,
            env=allocator_env(self.allocator),
        )
        return self.orchestrator

    def arenas_path(self) -> Path:
        return self.logs / f"arenas-{self.retention:g}.jsonl"

    async def arenas(self) -> dict[str, int]:
        """The orchestrator's pymalloc arenas and live small-object bytes (bench/arenas.py)."""
        assert self.orchestrator is not None
        path = self.arenas_path()
        before = len(read_reports(path))
        os.kill(self.orchestrator.pid, signal.SIGUSR1)
        for _ in range(100):
            reports = read_reports(path)
            if len(reports) > before:
                return dict(reports[-1])
            await asyncio.sleep(0.05)
        return {}

    async def start(self) -> None:
        await self.nats.start()
        self.start_orchestrator(self.retention)
        self._client = await ShoalClient.connect(self.url, timeout=self.config.client_timeout)
        await self._until_api()
        await self.add_agents([f"node-{i}" for i in range(self.config.agents)])


class Endings:
    """When each job was seen to end (its JobEvent), and a wait for a set of them to."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self._progress = asyncio.Event()

    async def follow(self, client: ShoalClient) -> None:
        await client.bus.subscribe(subjects.EVENTS_SUBJECTS, self._on_event)
        await client.bus.flush()

    async def _on_event(self, msg: Message) -> None:
        event = wire.decode(msg.data, wire.JobEvent)
        if event.kind == "job" and event.state in wire.TERMINAL_JOB_STATES:
            self.at.setdefault(event.job_id, time.time())
            self._progress.set()

    async def all_of(self, ids: list[str], timeout: float, what: str) -> None:
        t0 = time.perf_counter()
        while not set(ids) <= self.at.keys():
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), 1.0)
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{what}: jobs did not end in time")


async def held(bus: Bus) -> dict[str, int]:
    """Messages each of the jobs' streams holds."""
    out = {}
    for stream in JOB_STREAMS:
        info = json.loads(await bus.request(f"$JS.API.STREAM.INFO.{stream}", b""))
        out[stream] = int(info.get("state", {}).get("messages", 0))
    return out


async def _list_ms(client: ShoalClient, tries: int = 5) -> float:
    times = []
    for _ in range(tries):
        t0 = time.perf_counter()
        await client.jobs(limit=100)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 1)


async def _until(check: Callable[[], Any], timeout: float, every: float = 0.05) -> float:
    """Seconds until `check()` returns truthy (raising ShoalError counts as not yet)."""
    t0 = time.perf_counter()
    while True:
        with contextlib.suppress(ShoalError, TimeoutError):
            if await check():
                return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"not done within {timeout}s")
        await asyncio.sleep(every)


async def _returned(retention: float) -> None:
    """One sweep period on from the last purge: the sweep that finds nothing more to purge
    gives the freed memory back (orchestrator/retention.py), a retention / 4 after it."""
    await asyncio.sleep(min(retention / 4, 60.0) + 2.0)


async def soak(
    workdir: Path,
    n: int,
    waves: int = 10,
    agents: int = 3,
    retention: float = 30.0,
    progress: Callable[[str], None] = print,
    allocator: str = "pymalloc",
) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "waves": waves, "retention_s": retention}
    config = StackConfig(agents=agents, client_timeout=120.0)
    allocator_env(allocator)  # a missing library is said before anything starts
    stack = SoakStack(workdir, config)
    stack.allocator = allocator
    async with stack:
        client = stack.client
        await asyncio.sleep(2.0)  # settled: agents registered, buckets open
        start_rss = stack.orchestrator_usage().rss
        out["rss_start_mib"] = mib(start_rss)
        assert stack.orchestrator is not None
        if not loaded(stack.orchestrator.pid, allocator):
            raise RuntimeError(f"the orchestrator was started on {allocator} but does not map it")
        out["allocator"] = allocator
        endings = Endings()
        await endings.follow(client)
        ended = endings.at

        async def run_waves(measure: bool) -> list[dict[str, Any]]:
            wave_rows = []
            slots = asyncio.Semaphore(256)

            async def submit() -> str:
                async with slots:
                    return await client.submit(SOAK_JOB)

            size = max(n // waves, 1)
            for wave in range(waves):
                t0 = time.perf_counter()
                ids = await asyncio.gather(*(submit() for _ in range(size)))
                await endings.all_of(ids, max(300.0, size * 0.1), f"wave {wave}")
                elapsed = time.perf_counter() - t0
                row: dict[str, Any] = {"jobs": (wave + 1) * size, "wave_s": round(elapsed, 1)}
                if not measure:  # RSS as the jobs run, without waiting for them to settle
                    row["rss_mib"] = mib(stack.orchestrator_usage().rss)
                else:
                    # The last copies and history writes of the wave still run for a moment,
                    # and the leader settles its jobs a second after they end: measure once
                    # that is done.
                    await asyncio.sleep(2.5)
                    row["rss_mib"] = mib(stack.orchestrator_usage().rss)
                    row["list_ms"] = await _list_ms(client)
                wave_rows.append(row)
                progress(f"soak: {row}")
            return wave_rows

        wave_rows = await run_waves(measure=True)
        rss = stack.orchestrator_usage().rss
        size = max(n // waves, 1)
        out["waves_measured"] = wave_rows
        total = waves * size
        out["rss_per_1000_mib"] = round(mib(rss - start_rss) / (total / 1000), 2)
        # What each retained job adds, without what any wave needs while it runs (the jobs
        # being run, buffers): the growth from the first wave's end to the last's.
        first = wave_rows[0]
        grown = wave_rows[-1]["rss_mib"] - first["rss_mib"]
        out["rss_slope_per_1000_mib"] = round(grown / max((total - first["jobs"]) / 1000, 1), 2)
        last_end = max(ended.values())

        # Restart over the stored jobs: until the API answers, until a new job is scheduled.
        assert stack.orchestrator is not None
        await stack.orchestrator.stop()
        started = time.perf_counter()
        stack.start_orchestrator(0.0)
        probe = await ShoalClient.connect(stack.url, timeout=1.0)
        try:
            api = await _until(lambda: probe.jobs(limit=1), 120.0, every=0.02)
            job_id = await client.submit(SOAK_JOB)
            await client.wait(job_id, timeout=120)
            scheduled = time.perf_counter() - started
        finally:
            await probe.close()
        out["restart"] = {
            "stored_jobs": total + 1,
            "api_s": round(api + 0, 2),
            "scheduled_s": round(scheduled, 2),
            "rss_mib": mib(stack.orchestrator_usage().rss),
        }
        progress(f"soak: restart {out['restart']}")
        last_end = max(last_end, time.time())

        # A short retention set on a store of N old jobs (a backlog, every job due at once):
        # until JetStream holds nothing of them.
        await stack.orchestrator.stop()
        restarted = time.perf_counter()
        stack.start_orchestrator(retention)
        await stack._until_api(120.0)
        restarted_rss = stack.orchestrator_usage().rss

        async def empty() -> bool:
            return not any((await held(client.bus)).values())

        await _until(empty, max(600.0, total * 0.05), every=0.5)
        emptied = time.time()
        purged_s = time.perf_counter() - restarted
        await _returned(retention)
        after = stack.orchestrator_usage().rss
        out["backlog"] = {
            "jobs": total + 1,
            "empty_after_last_end_s": round(emptied - last_end, 1),
            "empty_after_restart_s": round(purged_s, 1),
            "rss_loaded_mib": mib(restarted_rss),
            "rss_after_mib": mib(after),
            "rss_after_vs_start": round(after / start_rss, 2),
        }
        progress(f"soak: backlog {out['backlog']}")

        # The retention as the orchestrator runs with it: N more jobs in waves, each purged
        # a retention after it ends; from the last end until JetStream holds nothing of them,
        # and the RSS then against this orchestrator's at its start.
        await stack.orchestrator.stop()
        stack.start_orchestrator(retention)
        await stack._until_api(120.0)
        await asyncio.sleep(2.0)
        steady_start = stack.orchestrator_usage().rss
        arenas_start = await stack.arenas()
        ended.clear()
        steady_rows = await run_waves(measure=False)
        last_end = max(ended.values())
        peak = stack.orchestrator_usage().rss
        await _until(empty, max(600.0, total * 0.05), every=0.5)
        emptied = time.time()
        await _returned(retention)
        after = stack.orchestrator_usage().rss
        arenas_after = await stack.arenas()
        out["retention"] = {
            "jobs": len(steady_rows) * size,
            "run_s": round(sum(r["wave_s"] for r in steady_rows), 1),
            "empty_after_last_end_s": round(emptied - last_end, 1),
            "rss_start_mib": mib(steady_start),
            "rss_last_wave_mib": mib(peak),
            "rss_by_wave_mib": [r["rss_mib"] for r in steady_rows],
            "rss_after_mib": mib(after),
            "rss_after_vs_start": round(after / steady_start, 2),
            "arenas_start": arenas_start,
            "arenas_after": arenas_after,
        }
        progress(f"soak: retention {out['retention']}")
    return out


def rows(r: dict[str, Any]) -> list[Row]:
    last = r["waves_measured"][-1]
    restart, backlog, retention = r["restart"], r["backlog"], r["retention"]
    return [
        Row(
            "soak",
            f"RSS start / after {last['jobs']} jobs ({r.get('allocator', 'pymalloc')})",
            f"{r['rss_start_mib']} / {last['rss_mib']} MiB",
        ),
        Row(
            "soak",
            "RSS per 1,000 finished jobs: from wave 1 to the last / from the start",
            f"{r['rss_slope_per_1000_mib']} / {r['rss_per_1000_mib']} MiB",
        ),
        Row("soak", f"job list --limit 100 at {last['jobs']} jobs", f"{last['list_ms']} ms"),
        Row(
            "soak",
            f"restart over {restart['stored_jobs']} jobs: API / scheduling",
            f"{restart['api_s']} / {restart['scheduled_s']} s",
        ),
        Row(
            "soak",
            f"retention {r['retention_s']:g} s over {retention['jobs']} jobs as they end: "
            "JetStream empty after the last end",
            f"{retention['empty_after_last_end_s']} s",
        ),
        Row(
            "soak",
            "  RSS start / after the last wave / after the purge (x start)",
            f"{retention['rss_start_mib']} / {retention['rss_last_wave_mib']} / "
            f"{retention['rss_after_mib']} MiB ({retention['rss_after_vs_start']})",
        ),
        Row(
            "soak",
            "  pymalloc arenas (1 MiB) start / after; bytes in live small objects start / after",
            _arenas_row(
                retention.get("arenas_start", {}),
                retention.get("arenas_after", {}),
                r.get("allocator", "pymalloc"),
            ),
        ),
        Row(
            "soak",
            f"retention {r['retention_s']:g} s set on {backlog['jobs']} old jobs: "
            "JetStream empty after the restart",
            f"{backlog['empty_after_restart_s']} s",
        ),
        Row(
            "soak",
            "  RSS loaded / after the purge (x first start)",
            f"{backlog['rss_loaded_mib']} / {backlog['rss_after_mib']} MiB "
            f"({backlog['rss_after_vs_start']})",
        ),
    ]


def _arenas_row(start: dict[str, int], after: dict[str, int], allocator: str) -> str:
    if not start or not after:
        return "- (no report)" if allocator == "pymalloc" else f"- ({allocator})"
    live = f"{mib(start['allocated_bytes'])} / {mib(after['allocated_bytes'])} MiB"
    return f"{start['arenas']} / {after['arenas']}; {live}"


# ---- the orchestrator process ------------------------------------------------------------------


async def _serve(url: str, retention: float, arenas: Path | None) -> None:
    from orchestrator.service import Orchestrator, OrchestratorConfig

    bus = await Bus.connect(url, name="shoal-orchestrator")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if arenas is not None:
        loop.add_signal_handler(signal.SIGUSR1, write_report, arenas)
    try:
        async with Orchestrator(bus, OrchestratorConfig(job_retention=retention)):
            await stop.wait()
    finally:
        await bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--serve", metavar="NATS_URL", required=True)
    parser.add_argument("--retention", type=float, default=0.0)
    parser.add_argument("--arenas", type=Path, help="where SIGUSR1 appends pymalloc's state")
    args = parser.parse_args()
    from cli.common import run

    run(_serve(args.serve, args.retention, args.arenas))


if __name__ == "__main__":
    main()
