"""Percentiles, the results table, and the JSON file a run writes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of durations given in seconds, in milliseconds."""
    if not seconds:
        return {}
    return {
        "p50_ms": round(percentile(seconds, 50) * 1000, 2),
        "p90_ms": round(percentile(seconds, 90) * 1000, 2),
        "p99_ms": round(percentile(seconds, 99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
        "mean_ms": round(sum(seconds) / len(seconds) * 1000, 2),
    }


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    metric: str
    value: str
    target: str = ""
    verdict: str = ""


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def median_interval(
    values: Sequence[float], level: float = 0.9, resamples: int = 4000
) -> tuple[float, float]:
    """A percentile-bootstrap interval for the median of `values`: the range the median of
    rounds like these would fall in `level` of the time. Seeded, so the JSON's samples give
    back the same interval."""
    rng = random.Random(1)
    medians = sorted(
        statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples)
    )
    cut = int((1 - level) / 2 * resamples)
    return medians[cut], medians[resamples - 1 - cut]


def interval_verdict(
    low: float, high: float, *, at_most: float | None = None, at_least: float | None = None
) -> str:
    """met / MISSED when the whole interval is on one side of the target, else `noise`: the
    rounds cannot tell the figure from the target."""
    if at_most is not None:
        return "met" if high <= at_most else ("MISSED" if low > at_most else "noise")
    assert at_least is not None
    return "met" if low >= at_least else ("MISSED" if high < at_least else "noise")


def print_table(rows: Sequence[Row]) -> None:
    headers = ("scenario", "metric", "value", "target", "")
    cells = [headers, *((r.scenario, r.metric, r.value, r.target, r.verdict) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    for n, line in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths).rstrip())


def machine() -> dict[str, Any]:
    mem = 0
    with contextlib.suppress(ValueError, OSError):
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_json(results: dict[str, Any], path: Path | None) -> Path:
    if path is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    return path
