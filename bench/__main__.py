"""`python -m bench <scenario>...`: run benchmark scenarios, print a table, write JSON."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bigjob, celery_bench, paired, scenarios, soak
from bench.allocator import ALLOCATORS
from bench.report import Row, interval_verdict, machine, print_table, verdict, write_json
from cli.common import run as run_async

SCENARIOS = (
    "latency",
    "throughput",
    "fleet",
    "daemon",
    "bigjob",
    "celery",
    "paired",
    "paired-throughput",
)
# Run only when named (not by `all`): minutes to hours.
LONG_SCENARIOS = ("soak",)
DEFAULT_N = {"latency": 200, "throughput": 1000, "daemon": 10, "soak": 2000}
FLEET_SIZES = (1000, 10_000)

TARGETS = {
    "latency_ratio": "Shoal p50 latency <= Celery's",
    "throughput_ratio": "Shoal throughput >= 6x Celery's",
    "fleet": "10,000 nodes: orchestrator < 0.5 core and < 500 MB",
    "daemon": "daemon running on a joining node < 500 ms",
    "soak": "<= 1 MiB RSS per 1,000 finished jobs; restart API < 3 s, scheduling < 5 s; "
    "job list < 50 ms; JetStream empty 30 s after the last job ends (retention 30 s)",
}


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "scenarios",
        nargs="+",
        choices=(*SCENARIOS, *LONG_SCENARIOS, "all"),
        metavar="SCENARIO",
        help=f"one or more of {', '.join(SCENARIOS + LONG_SCENARIOS)}, or all (but "
        f"{', '.join(LONG_SCENARIOS)})",
    )
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="jobs (latency 200, throughput 1000, celery both), joins (daemon 10), "
        "or the one fleet size",
    )
    parser.add_argument("--json", type=Path, default=None, help="default bench/results/<time>.json")
    parser.add_argument("--agents", type=int, default=3, help="compute agents (processes)")
    parser.add_argument(
        "--fleet-sizes",
        default=",".join(str(k) for k in FLEET_SIZES),
        help="comma-separated virtual node counts",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=30.0,
        help="fleet CPU window, seconds (30 covers one 30 s re-hello cycle of the agents)",
    )
    parser.add_argument(
        "--fleet",
        choices=("auto", "bench", "product"),
        default="auto",
        help="virtual nodes from `shoal compute --virtual` (product) or bench/fleet.py",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy the orchestrator during latency, throughput and fleet; raw profiles go to DIR",
    )
    parser.add_argument(
        "--publisher",
        default="",
        help="give the trivial job this Publisher (e.g. nats, noop); default: none, so "
        "it keeps no archive (its output stays in SHOAL_LOGS)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="latency: mark each step of each job in every process (shared.trace) and print "
        "the median timeline",
    )
    parser.add_argument(
        "--rounds", type=int, default=12, help="paired: alternating rounds (default 12)"
    )
    parser.add_argument(
        "--throughput-rounds",
        type=int,
        default=4,
        help="paired-throughput: alternating rounds of --n jobs at once (default 4)",
    )
    parser.add_argument(
        "--round-n", type=int, default=50, help="paired: sequential jobs per round and side"
    )
    parser.add_argument(
        "--daemon-fleet",
        type=int,
        default=0,
        help="daemon: a virtual fleet of this many nodes runs the daemon jobs before the joins",
    )
    parser.add_argument(
        "--daemon-jobs", type=int, default=1, help="daemon: daemon jobs (default 1)"
    )
    parser.add_argument(
        "--count",
        default="10000",
        help="bigjob: comma-separated partition counts, one job each (default 10000)",
    )
    parser.add_argument("--waves", type=int, default=10, help="soak: waves of --n / WAVES jobs")
    parser.add_argument(
        "--retention",
        type=float,
        default=30.0,
        help="soak: the job retention (seconds) of the last two orchestrators: one set on the "
        "N stored jobs, one that runs N more",
    )
    parser.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default="pymalloc",
        help="soak: the orchestrator's memory allocator (jemalloc: as deploy/Dockerfile runs it)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    return parser.parse_args()


def _progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    chosen = SCENARIOS if "all" in args.scenarios else tuple(args.scenarios)
    out: dict[str, Any] = {}
    loads: dict[str, float] = {}
    out["load_average_1m"] = loads  # the machine may be shared: read figures against this

    def note_load(name: str) -> None:
        loads[name] = round(os.getloadavg()[0], 2)

    def n_for(name: str) -> int:
        return args.n if args.n is not None else DEFAULT_N[name]

    if "latency" in chosen:
        note_load("latency")
        _progress(f"latency: {n_for('latency')} sequential jobs")
        out["latency"] = await scenarios.latency(
            workdir / "latency",
            n_for("latency"),
            args.agents,
            args.publisher,
            args.profile / "latency.txt" if args.profile else None,
            trace_dir=workdir / "latency-trace" if args.trace else None,
        )
    if "throughput" in chosen:
        note_load("throughput")
        _progress(f"throughput: {n_for('throughput')} jobs at once")
        profile = args.profile / "throughput.txt" if args.profile else None
        out["throughput"] = await scenarios.throughput(
            workdir / "throughput", n_for("throughput"), args.agents, profile, args.publisher
        )
    if "fleet" in chosen:
        note_load("fleet")
        sizes = (
            [args.n] if args.n is not None else [int(k) for k in args.fleet_sizes.split(",") if k]
        )
        out["fleet"] = await scenarios.fleet(
            workdir / "fleet",
            sizes,
            window=args.window,
            kind=args.fleet,
            profile_dir=args.profile,
            progress=_progress,
        )
    if "daemon" in chosen:
        note_load("daemon")
        _progress(f"daemon: {n_for('daemon')} nodes join a running daemon job")
        out["daemon"] = await scenarios.daemon_join(
            workdir / "daemon", n_for("daemon"), args.agents, args.daemon_fleet, args.daemon_jobs
        )

    if "bigjob" in chosen:
        note_load("bigjob")
        runs = []
        for count in (int(c) for c in args.count.split(",") if c):
            _progress(f"bigjob: one job of {count} partitions on {args.agents} agents")
            runs.append(await bigjob.bigjob(workdir / f"bigjob-{count}", count, args.agents))
        out["bigjob"] = runs

    def celery_runs(name: str) -> bool:
        """Whether scenario `name`, which needs the Celery peer, runs (else it is skipped)."""
        if name not in chosen:
            return False
        note_load(name)
        why = celery_bench.available()
        if why is not None:
            _progress(f"{name}: skipped: {why}")
            out[name] = {"skipped": why}
        return why is None

    if celery_runs("celery"):
        _progress("celery: the same loads through Celery + Redis")
        out["celery"] = await asyncio.to_thread(
            celery_bench.run, workdir / "celery", n_for("latency"), n_for("throughput")
        )
    if celery_runs("paired"):
        _progress(f"paired: Shoal and Celery latency in {args.rounds} alternating rounds")
        out["paired"] = await paired.paired_latency(
            workdir / "paired", args.rounds, args.round_n, args.agents, args.publisher
        )
    if celery_runs("paired-throughput"):
        n = n_for("throughput")
        _progress(f"paired-throughput: {args.throughput_rounds} alternating rounds of {n} at once")
        out["paired-throughput"] = await paired.paired_throughput(
            workdir / "paired-throughput", args.throughput_rounds, n, args.agents, args.publisher
        )
    if "soak" in chosen:
        note_load("soak")
        _progress(f"soak: {n_for('soak')} trivial jobs in {args.waves} waves")
        out["soak"] = await soak.soak(
            workdir / "soak",
            n_for("soak"),
            args.waves,
            args.agents,
            args.retention,
            progress=_progress,
            allocator=args.allocator,
        )
    loads["end"] = round(os.getloadavg()[0], 2)
    return out


def _compare(results: dict[str, Any]) -> dict[str, Any]:
    celery = results.get("celery", {})
    out: dict[str, Any] = {}
    if "latency" in results and "latency" in celery:
        shoal_p50 = results["latency"]["submit_to_completed"]["p50_ms"]
        celery_p50 = celery["latency"]["delay_to_get"]["p50_ms"]
        out["latency_p50_ratio"] = round(shoal_p50 / celery_p50, 2)
    if "throughput" in results and "throughput" in celery:
        out["throughput_ratio"] = round(
            results["throughput"]["jobs_per_s"] / celery["throughput"]["tasks_per_s"], 2
        )
    return out


def _rows(results: dict[str, Any], compare: dict[str, Any]) -> list[Row]:
    rows: list[Row] = soak.rows(results["soak"]) if "soak" in results else []
    if "latency" in results:
        r = results["latency"]
        s = r["submit_to_completed"]
        rows += [
            Row("latency", f"submit->Completed p50 (n={r['n']})", f"{s['p50_ms']:.1f} ms"),
            Row("latency", "p99 / max", f"{s['p99_ms']:.1f} / {s['max_ms']:.1f} ms"),
            Row("latency", "orchestrator CPU per job", f"{r['orchestrator']['cpu_ms_per_job']} ms"),
        ]
        if "writes_per_job" in r["orchestrator"]:
            o = r["orchestrator"]
            rows.append(
                Row(
                    "latency",
                    "orchestrator writes / reads per job",
                    f"{o['writes_per_job']} / {o['reads_per_job']} syscalls",
                )
            )
        if "cpu_ms_per_job" in r:
            c = r["cpu_ms_per_job"]
            rows.append(
                Row(
                    "latency",
                    "CPU/job: nats / agents / client",
                    f"{c['nats_server']} / {c['agents']} / {c['client']} ms",
                )
            )
    if "throughput" in results:
        r = results["throughput"]
        o = r["orchestrator"]
        rows += [
            Row("throughput", f"jobs/s (n={r['n']}, {r['agents']} agents)", f"{r['jobs_per_s']}"),
            Row(
                "throughput",
                "submit phase / tail after it",
                f"{r['submit_phase_s']} s / {r['tail_after_last_submit_s']} s",
            ),
            Row("throughput", "orchestrator CPU", f"{o['cpu_s']} s ({o['cpu_ms_per_job']} ms/job)"),
            Row(
                "throughput",
                "CPU: nats / agents / client",
                f"{r['nats_server_cpu_s']} / {r['agents_cpu_s']} / {r.get('client_cpu_s', '?')} s",
            ),
            Row("throughput", "orchestrator peak RSS", f"{o['peak_rss_mib']} MiB"),
        ]
        if r["unfinished"] or r["failed_or_stopped"]:
            rows.append(
                Row("throughput", "NOT completed", f"{r['unfinished'] + r['failed_or_stopped']}")
            )
    for run in results.get("fleet", {}).get("runs", []):
        k, o = run["nodes"], run["orchestrator"]
        big = k >= 10_000
        detect = run["silence_detected_s"]
        rows += [
            Row(
                f"fleet {k}",
                "registration (hellos per node)",
                f"{run['register_s']} s ({run['hellos_per_node_while_registering']})",
            ),
            Row(
                f"fleet {k}",
                "orchestrator CPU share",
                f"{o['cpu_share']:.3f} core",
                "< 0.5" if big else "",
                verdict(o["cpu_share"] < 0.5) if big else "",
            ),
            Row(
                f"fleet {k}",
                "orchestrator RSS (peak)",
                f"{o['rss_mib']} MiB ({o['peak_rss_mib']})",
                "< 500 MB" if big else "",
                verdict(o["peak_rss_mib"] * 2**20 < 500e6) if big else "",
            ),
            Row(
                f"fleet {k}",
                "CPU per heartbeat (above idle)",
                f"{run['orchestrator_cpu_us_per_heartbeat']} us "
                f"(idle {run['orchestrator_idle_cpu_share']:.3f} core)",
            ),
            Row(f"fleet {k}", "node KV writes", f"{run['node_kv_writes_per_s']}/s"),
            Row(
                f"fleet {k}",
                "live nodes marked DISCONNECTED",
                str(run["nodes_wrongly_disconnected"]),
                "0",
                verdict(run["nodes_wrongly_disconnected"] == 0),
            ),
            Row(
                f"fleet {k}",
                "silent node noticed after",
                ", ".join(f"{d:.2f}" for d in detect) + " s" if detect else "not noticed",
                f"timeout {run['disconnect_timeout_s']:g} s",
            ),
            Row(
                f"fleet {k}",
                "node list (client.nodes())",
                f"{run['node_list']['ms']} ms" if run["node_list"]["ok"] else "FAILED",
            ),
        ]
        if "jobs" in run:
            j = run["jobs"]
            rows += [
                Row(f"fleet {k}", "trivial job on the fleet, p50", f"{j['sequential_p50_ms']} ms"),
                Row(
                    f"fleet {k}",
                    f"{j['burst']} jobs at once",
                    f"{j['burst_jobs_per_s']} jobs/s ({j['burst_completed']} completed, "
                    f"orchestrator {j.get('burst_cpu_ms_per_job', '?')} ms CPU/job)",
                ),
            ]
    rows += bigjob.rows(results.get("bigjob", []))
    if "daemon" in results:
        d = results["daemon"]["hello_to_running"]
        rows += [
            Row(
                "daemon",
                f"join->running p50 (n={results['daemon']['joins']}{_daemon_load(results)})",
                f"{d['p50_ms']:.1f} ms",
                "< 500 ms",
                verdict(d["p50_ms"] < 500),
            ),
            Row("daemon", "max", f"{d['max_ms']:.1f} ms", "< 500 ms", verdict(d["max_ms"] < 500)),
        ]
    celery = results.get("celery", {})
    if "latency" in celery:
        s = celery["latency"]["delay_to_get"]
        t = celery["throughput"]
        rows += [
            Row("celery", f"delay().get() p50 (n={celery['latency']['n']})", f"{s['p50_ms']} ms"),
            Row("celery", "p99 / max", f"{s['p99_ms']} / {s['max_ms']} ms"),
            Row("celery", f"tasks/s (n={t['n']})", f"{t['tasks_per_s']}"),
        ]
    if "latency_p50_ratio" in compare:
        ratio = compare["latency_p50_ratio"]
        rows.append(
            Row("compare", "Shoal/Celery p50 latency", f"{ratio}x", "<= 1", verdict(ratio <= 1))
        )
    if "throughput_ratio" in compare:
        ratio = compare["throughput_ratio"]
        rows.append(
            Row("compare", "Shoal/Celery throughput", f"{ratio}x", ">= 6", verdict(ratio >= 6))
        )
    p = results.get("paired", {})
    if "round_ratios" in p:
        rows += [
            Row(
                "paired",
                f"p50 Shoal / Celery ({p['rounds']} x {p['n_per_round']} each)",
                f"{p['shoal']['p50_ms']} / {p['celery']['p50_ms']} ms",
            ),
            Row("paired", "round ratios", " ".join(f"{r}x" for r in p["round_ratios"])),
            _median_row("paired", "latency", p, "<= 1", at_most=1.0),
        ]
    t = results.get("paired-throughput", {})
    if "round_ratios" in t:
        rows += [
            Row(
                "paired-tput",
                f"jobs/s Shoal / Celery ({t['rounds']} x {t['n']} each)",
                "  ".join(f"{s}/{c}" for s, c in t["round_jobs_per_s"]),
            ),
            _median_row("paired-tput", "throughput", t, ">= 6", at_least=6.0),
        ]
    return rows


def _daemon_load(results: dict[str, Any]) -> str:
    d = results["daemon"]
    jobs, fleet = d.get("daemon_jobs", 1), d.get("fleet", 0)
    return f", {jobs} jobs on {fleet} nodes" if fleet or jobs > 1 else ""


def _median_row(
    scenario: str, what: str, paired: dict[str, Any], target: str, **bound: float
) -> Row:
    """A paired scenario's median round ratio, its interval, and the verdict on `bound`."""
    low, high = paired["median_ratio_90pct_interval"]
    return Row(
        scenario,
        f"median round ratio ({what})",
        f"{paired['median_round_ratio']}x (90% interval {low}-{high}x)",
        target,
        interval_verdict(low, high, **bound),
    )


def _commit() -> str:
    """HEAD, with `+dirty` if the product's code differs from it."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "shared", "orchestrator", "compute", "cli")
    return f"{head}+dirty" if dirty else head


def main() -> None:
    args = _parse()
    logging.basicConfig(level=logging.WARNING)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if args.keep:
        workdir = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
        results = run_async(_run(args, workdir))
        print(f"work directory kept: {workdir}")
    else:
        with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
            results = run_async(_run(args, Path(tmp)))
    compare = _compare(results)
    document = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": machine(),
        # the harness's own loop (its client); the shoal processes follow SHOAL_EVENT_LOOP too
        "event_loop": os.environ.get("SHOAL_EVENT_LOOP", "uvloop"),
        "commit": _commit(),
        "command": "python -m bench " + " ".join(args.scenarios),
        "results": results,
        "compare": compare,
        "targets": TARGETS,
    }
    print()
    print_table(_rows(results, compare))
    path = write_json(document, args.json)
    print(f"\nresults written to {path}")


if __name__ == "__main__":
    main()
