"""Shoal's and Celery's latency and throughput measured in alternating rounds, so that each
ratio is taken in the same minutes (the machine's speed drifts more than the gap), with an
interval for the median ratio that says whether the rounds can tell it from the target."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.celery_bench import CeleryPeer
from bench.report import median_interval, percentile, summary_ms
from bench.scenarios import WARMUP, trivial
from bench.stack import ShoalStack, StackConfig
from shared.client import ShoalClient


async def _shoal_block(client: ShoalClient, spec: dict[str, Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        view = await client.run(spec, timeout=30)
        samples.append(time.perf_counter() - t0)
        if view.state != "Completed":
            raise RuntimeError(f"job {view.id} ended {view.state}: {view.state_message}")
    return samples


async def paired_latency(
    workdir: Path, rounds: int, n: int, agents: int = 3, publisher: str = ""
) -> dict[str, Any]:
    """`rounds` rounds of `n` sequential jobs on each side; who goes first alternates."""
    spec = trivial(publisher)
    peer = CeleryPeer(workdir / "celery")
    await asyncio.to_thread(peer.start)
    try:
        async with ShoalStack(workdir / "shoal", StackConfig(agents=agents)) as stack:
            await _shoal_block(stack.client, spec, WARMUP)
            shoal: list[list[float]] = []
            celery: list[list[float]] = []
            for r in range(rounds):
                if r % 2 == 0:
                    shoal.append(await _shoal_block(stack.client, spec, n))
                    celery.append(await asyncio.to_thread(peer.latency, n))
                else:
                    celery.append(await asyncio.to_thread(peer.latency, n))
                    shoal.append(await _shoal_block(stack.client, spec, n))
    finally:
        await asyncio.to_thread(peer.stop)
    ratios = [percentile(s, 50) / percentile(c, 50) for s, c in zip(shoal, celery, strict=True)]
    pooled_shoal = [x for block in shoal for x in block]
    pooled_celery = [x for block in celery for x in block]
    low, high = median_interval(ratios)
    return {
        "rounds": rounds,
        "n_per_round": n,
        "shoal": summary_ms(pooled_shoal),
        "celery": summary_ms(pooled_celery),
        "round_p50_ms": [
            [round(percentile(s, 50) * 1000, 2), round(percentile(c, 50) * 1000, 2)]
            for s, c in zip(shoal, celery, strict=True)
        ],
        "round_ratios": [round(x, 2) for x in ratios],
        "median_round_ratio": round(statistics.median(ratios), 2),
        "median_ratio_90pct_interval": [round(low, 2), round(high, 2)],
        "pooled_p50_ratio": round(percentile(pooled_shoal, 50) / percentile(pooled_celery, 50), 2),
    }


async def paired_throughput(
    workdir: Path, rounds: int, n: int, agents: int = 3, publisher: str = ""
) -> dict[str, Any]:
    """`rounds` rounds of `n` jobs at once on each side, who goes first alternating: Shoal's
    on a fresh stack each round (as `throughput`), Celery's on one peer kept up throughout."""
    peer = CeleryPeer(workdir / "celery")
    await asyncio.to_thread(peer.start)
    shoal: list[dict[str, Any]] = []
    celery: list[dict[str, Any]] = []

    async def shoal_round(r: int) -> None:
        result = await scenarios.throughput(workdir / f"shoal-{r}", n, agents, None, publisher)
        if result["completed"] != n:
            raise RuntimeError(f"round {r}: only {result['completed']} of {n} jobs completed")
        shoal.append(result)

    try:
        for r in range(rounds):
            if r % 2 == 0:
                await shoal_round(r)
                celery.append(await asyncio.to_thread(peer.throughput, n))
            else:
                celery.append(await asyncio.to_thread(peer.throughput, n))
                await shoal_round(r)
    finally:
        await asyncio.to_thread(peer.stop)
    ratios = [s["jobs_per_s"] / c["tasks_per_s"] for s, c in zip(shoal, celery, strict=True)]
    low, high = median_interval(ratios)
    return {
        "rounds": rounds,
        "n": n,
        "round_jobs_per_s": [
            [s["jobs_per_s"], c["tasks_per_s"]] for s, c in zip(shoal, celery, strict=True)
        ],
        "round_ratios": [round(x, 2) for x in ratios],
        "median_round_ratio": round(statistics.median(ratios), 2),
        "median_ratio_90pct_interval": [round(low, 2), round(high, 2)],
        "shoal_cpu_ms_per_job": [s["orchestrator"]["cpu_ms_per_job"] for s in shoal],
    }
