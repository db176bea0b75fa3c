"""The bigjob scenario: one batch job of N partitions, and how the API fares meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.procs import mib
from bench.report import Row, summary_ms, verdict
from bench.scenarios import trivial
from bench.stack import ShoalStack, StackConfig
from shared import wire
from shared.errors import ShoalError

# Probes ask the orchestrator this often while the big job runs, each as a user would: one
# `describe` of the big job, `node list`, `job list` and a small job run to its end.
PROBE_EVERY = 1.0
PROBE_TIMEOUT = 30.0
PROBES = ("describe", "node_list", "job_list", "small_job")


def big(count: int) -> dict[str, Any]:
    return {"Type": "batch", "Count": count, "Tasks": [{"Engine": {"Type": "noop"}}]}


class _Probes:
    """Each probe's answer times, and what `describe` said of the big job while it ran."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.failures: Counter[str] = Counter()
        self.states: list[tuple[float, str, dict[str, int]]] = []

    async def timed(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        t0 = time.perf_counter()
        try:
            result = await asyncio.wait_for(call(), PROBE_TIMEOUT)
        except (ShoalError, TimeoutError) as exc:
            self.failures[f"{name}: {type(exc).__name__}"] += 1
            return None
        self.times.setdefault(name, []).append(time.perf_counter() - t0)
        return result

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: summary_ms(ts) for name, ts in self.times.items()}
        for name, ts in self.times.items():
            out[name]["max_ms"] = round(max(ts) * 1000, 1)
            out[name]["over_1s"] = sum(t > 1.0 for t in ts)
        out["failures"] = dict(self.failures)
        return out


async def _probe(stack: ShoalStack, job_id: str, t0: float, probes: _Probes) -> None:
    client = stack.client
    while True:
        view = await probes.timed("describe", lambda: client.describe(job_id))
        if isinstance(view, wire.JobView):
            probes.states.append(
                (round(time.monotonic() - t0, 1), str(view.state), dict(view.execution_counts))
            )
        await probes.timed("node_list", client.nodes)
        await probes.timed("job_list", lambda: client.jobs(limit=20))
        await probes.timed("small_job", lambda: client.run(trivial(), timeout=PROBE_TIMEOUT))
        await asyncio.sleep(PROBE_EVERY)


async def bigjob(workdir: Path, count: int, agents: int = 2) -> dict[str, Any]:
    """Submit one job of `count` noop partitions to `agents` nodes and follow it to its end."""
    config = StackConfig(agents=agents, client_timeout=PROBE_TIMEOUT)
    async with ShoalStack(workdir, config) as stack:
        client = stack.client
        before = stack.orchestrator_usage()
        peak_rss = before.rss
        t0 = time.monotonic()
        reply = await client.submit_full(big(count))
        submit_s = time.monotonic() - t0
        probes = _Probes()
        samples: list[tuple[float, float, float]] = []
        async with asyncio.TaskGroup() as group:
            prober = group.create_task(_probe(stack, reply.job_id, t0, probes))
            last = before
            while True:
                await asyncio.sleep(1.0)
                now = stack.orchestrator_usage()
                peak_rss = max(peak_rss, now.rss)
                samples.append(
                    (
                        round(now.at - t0, 1),
                        mib(now.rss),
                        round((now.cpu - last.cpu) / (now.at - last.at), 2),
                    )
                )
                last = now
                view = await probes.timed("describe", lambda: client.describe(reply.job_id))
                if isinstance(view, wire.JobView) and view.terminal:
                    break
            end_s = time.monotonic() - t0
            prober.cancel()
        after = stack.orchestrator_usage()
        states: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        offset = 0
        while True:
            page = await client.execution_page(reply.job_id, offset)
            for e in page.executions:
                states[e.compute_state] += 1
                if e.compute_state == "lost":
                    errors[e.error[:80]] += 1
            offset += len(page.executions)
            if not page.executions or offset >= page.total:
                break
        with contextlib.suppress(ShoalError):
            history = await client.history(reply.job_id)
        return {
            "count": count,
            "agents": agents,
            "state": str(view.state) if isinstance(view, wire.JobView) else "?",
            "submit_ms": round(submit_s * 1000, 1),
            "submit_to_end_s": round(end_s, 2),
            "placements_per_s": round(count / end_s, 1),
            "lost": states.get("lost", 0),
            "lost_errors": dict(errors.most_common(5)),
            "execution_states": dict(states),
            "history_events": len(history),
            "orchestrator": {
                "rss_before_mib": mib(before.rss),
                "rss_peak_mib": mib(peak_rss),
                "rss_after_mib": mib(after.rss),
                "rss_per_10k_mib": round((mib(peak_rss) - mib(before.rss)) / count * 10_000, 1),
                "cpu_s": round(after.cpu - before.cpu, 2),
                "cpu_share": round((after.cpu - before.cpu) / end_s, 2),
            },
            "probes": probes.summary(),
            "states_seen": list(dict.fromkeys(state for _, state, _ in probes.states)),
            "describe_states": probes.states,
            "samples": samples,
        }


def rows(results: list[dict[str, Any]]) -> list[Row]:
    """The table's rows for each count run."""
    out: list[Row] = []
    for r in results:
        name, o, p = f"bigjob {r['count']}", r["orchestrator"], r["probes"]
        slowest = max((p[k]["max_ms"] for k in PROBES if k in p), default=0.0)
        out += [
            Row(
                name,
                "submit answered",
                f"{r['submit_ms']} ms",
                "< 1 s",
                verdict(r["submit_ms"] < 1000),
            ),
            Row(name, "submit -> end", f"{r['submit_to_end_s']} s ({r['state']})"),
            Row(name, "placements per second", f"{r['placements_per_s']}"),
            Row(name, "lost executions", str(r["lost"]), "0", verdict(r["lost"] == 0)),
            Row(
                name,
                "orchestrator RSS before / peak",
                f"{o['rss_before_mib']} / {o['rss_peak_mib']} MiB ({o['rss_per_10k_mib']} per 10k)",
            ),
            Row(name, "orchestrator CPU", f"{o['cpu_s']} s ({o['cpu_share']} core)"),
            Row(
                name,
                "small job meanwhile p50 / max",
                f"{p['small_job']['p50_ms']} / {p['small_job']['max_ms']} ms",
                "< 1 s",
                verdict(p["small_job"]["max_ms"] < 1000),
            ),
            Row(
                name,
                "describe / node list / job list max",
                " / ".join(f"{p[k]['max_ms']}" for k in PROBES if k != "small_job") + " ms",
                "< 1 s",
                verdict(slowest < 1000 and not p["failures"]),
            ),
            Row(name, "states shown while it ran", ", ".join(r["states_seen"])),
        ]
    return out
