"""`python -m bench.restart`: an orchestrator restarted right after a burst of N jobs ended,
timed until its API answers, several times over copies of the one store.

The soak (bench/soak.py) times one restart; this one repeats it over the same stored state, so
two commits can be compared on it (`--src` runs a checkout's orchestrator, alternating). Right
after a burst some jobs have ended but are not settled yet: their executions are read at
start, and how that is done is most of what this measures besides the replay of the jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.allocator import ALLOCATORS, allocator_env
from bench.procs import Child
from bench.soak import SOAK_JOB, Endings, SoakStack
from bench.stack import StackConfig
from shared import subjects, wire
from shared.bus import Bus
from shared.client import ShoalClient
from shared.errors import ShoalError
from shared.natsserver import EmbeddedNats

API_WITHIN = 120.0  # seconds a restart may take before the bench gives up on it


async def fill(work: Path, n: int, waves: int, allocator: str) -> Path:
    """Run n jobs in waves, stop everything as the last one ends; the NATS store it leaves."""
    stack = SoakStack(work, StackConfig(agents=3, client_timeout=120.0))
    stack.allocator = allocator
    async with stack:
        client = stack.client
        endings = Endings()
        await endings.follow(client)
        slots = asyncio.Semaphore(256)

        async def submit() -> str:
            async with slots:
                return await client.submit(SOAK_JOB)

        for wave in range(waves):
            t0 = time.perf_counter()
            size = max(n // waves, 1)
            ids = await asyncio.gather(*(submit() for _ in range(size)))
            await endings.all_of(ids, max(300.0, size * 0.1), f"wave {wave + 1}")
            print(f"fill: wave {wave + 1}/{waves} in {time.perf_counter() - t0:.1f} s", flush=True)
    return stack.nats.store_dir


async def unsettled(url: str) -> int:
    """Stored jobs that have no settled counts yet (their executions are read at start)."""
    bus = await Bus.connect(url, name="bench-restart")
    try:
        kv = await bus.kv(subjects.JOBS_BUCKET)
        count = 0
        async for entry in kv.watch():
            if entry is None:
                return count
            if entry.value and wire.decode(entry.value, wire.JobRecord).settled is None:
                count += 1
    finally:
        await bus.close()
    return count


async def time_restart(store: Path, work: Path, src: Path, allocator: str) -> dict[str, Any]:
    """Start an orchestrator (from checkout `src`) over a copy of `store`; seconds until
    `job list` answers, counted from its process's start."""
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(store, run)
    server = EmbeddedNats(run)
    await server.start()
    try:
        count = await unsettled(server.url)
        cmd = [sys.executable, "-m", "bench.soak", "--serve", server.url, "--retention", "0"]
        name = f"orchestrator-{time.monotonic_ns()}"
        t0 = time.perf_counter()
        child = Child(name, cmd, work / "logs", env=allocator_env(allocator), cwd=src)
        try:
            client = await ShoalClient.connect(server.url, timeout=1.0)
            try:
                while True:
                    with contextlib.suppress(ShoalError, TimeoutError):
                        await client.jobs(limit=1)
                        break
                    child.check()  # an orchestrator that died says why, not a wait forever
                    if time.perf_counter() - t0 > API_WITHIN:
                        raise RuntimeError(f"{src}: no API within {API_WITHIN:g} s")
                    await asyncio.sleep(0.02)
                api = time.perf_counter() - t0
            finally:
                await client.close()
        finally:
            await child.stop()
    finally:
        await server.stop()
    return {"src": str(src), "api_s": round(api, 2), "unsettled": count}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    try:
        store = args.store
        if store is None:
            store = await fill(work / "fill", args.n, args.waves, args.allocator)
            if args.keep is not None:
                shutil.copytree(store, args.keep, dirs_exist_ok=True)
        srcs = args.src or [Path(__file__).resolve().parents[1]]
        runs: list[dict[str, Any]] = []
        for round_ in range(args.rounds):
            for src in srcs:
                run = await time_restart(store, work, src, args.allocator)
                print(f"restart {round_ + 1}/{args.rounds} {src}: {run}", flush=True)
                runs.append(run)
        by_src = {
            str(src): statistics.median(r["api_s"] for r in runs if r["src"] == str(src))
            for src in srcs
        }
        return {"n": args.n, "allocator": args.allocator, "runs": runs, "median_api_s": by_src}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="jobs run before the restarts")
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="restarts of each checkout")
    parser.add_argument("--allocator", choices=ALLOCATORS, default="jemalloc")
    parser.add_argument(
        "--src",
        type=Path,
        action="append",
        help="a checkout whose orchestrator to time (repeat to alternate); default this one",
    )
    parser.add_argument("--store", type=Path, help="a NATS store kept by --keep: no fill")
    parser.add_argument("--keep", type=Path, help="keep the filled NATS store here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.store is not None and not (args.store / "jetstream").is_dir():
        parser.error(
            f"--store {args.store}: not a NATS store (no jetstream/ in it); make one "
            "with --keep DIR"
        )
    for src in args.src or []:
        if not (src / "bench" / "soak.py").is_file():
            parser.error(f"--src {src}: not a Shoal checkout (no bench/soak.py in it)")
    return args


if __name__ == "__main__":
    from cli.common import run

    parsed = _parse()
    result = run(main(parsed))
    print(json.dumps(result["median_api_s"]))
    if parsed.json is not None:
        parsed.json.write_text(json.dumps(result, indent=2))
