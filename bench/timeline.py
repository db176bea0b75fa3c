"""The median time of every traced step of a job after its `client.run` began, across all
processes (`python -m bench latency --trace`; marks come from `shared.trace`)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

START, END = "client.run", "client.ended"


def timeline(directory: Path) -> dict[str, Any]:
    """A step seen twice for one job (a job evaluated at submit and again at its end) is
    named `step#2` the second time."""
    seen: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in directory.glob("*.txt"):
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) == 3:
                seen[parts[2]][parts[1]].append(float(parts[0]))
    offsets: dict[str, list[float]] = defaultdict(list)
    jobs = 0
    for steps in seen.values():
        if START not in steps or END not in steps:
            continue  # warm-up jobs (not started with run()) and marks without a job id
        jobs += 1
        t0 = min(steps[START])
        for step, times in steps.items():
            for i, at in enumerate(sorted(times)):
                offsets[step if i == 0 else f"{step}#{i + 1}"].append((at - t0) * 1000)
    medians = {step: round(statistics.median(v), 2) for step, v in offsets.items()}
    return {
        "jobs": jobs,
        "steps_p50_ms": dict(sorted(medians.items(), key=lambda kv: kv[1])),
    }


def print_timeline(result: dict[str, Any]) -> None:
    print(f"\ntimeline: median ms after client.run began ({result['jobs']} jobs)")
    previous = 0.0
    for step, ms in result["steps_p50_ms"].items():
        print(f"  {ms:7.2f}  (+{ms - previous:5.2f})  {step}")
        previous = ms
