"""The benchmark harness works end to end: tiny latency and throughput runs, no timing asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.profile import hot_spots

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_latency_and_throughput_scenarios_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "latency",
            "throughput",
            "--n",
            "5",
            "--agents",
            "1",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())
    latency = document["results"]["latency"]
    assert latency["n"] == 5 and latency["failed"] == 0, latency
    assert set(latency["submit_to_completed"]) >= {"p50_ms", "p99_ms", "max_ms"}
    assert "job Completed" in latency["phases_p50_ms"], latency
    assert latency["orchestrator"]["cpu_s"] > 0
    throughput = document["results"]["throughput"]
    assert throughput["completed"] == 5 and throughput["unfinished"] == 0, throughput
    assert throughput["jobs_per_s"] > 0
    assert throughput["orchestrator"]["peak_rss_mib"] > 0
    assert throughput["orchestrator_nats_msgs_per_job"]["published"] > 0
    assert "submit->Completed p50" in done.stdout  # the table


def test_hot_spots_reads_a_raw_py_spy_profile(tmp_path: Path) -> None:
    loop = (
        "<module> (/v/bin/shoal:6);run (/py/lib/python3.11/asyncio/runners.py:190);"
        "Handle._run (/py/lib/python3.11/asyncio/events.py:80)"
    )
    raw = tmp_path / "raw.txt"
    raw.write_text(
        f"{loop};EvalBroker.run_worker ({REPO}/orchestrator/evals.py:83);"
        f"Planner.spec_of ({REPO}/orchestrator/planner.py:60);"
        "model_validate (/v/lib/python3.11/site-packages/pydantic/main.py:792) 3\n"
        f"{loop};Client._flusher (/v/lib/python3.11/site-packages/nats/aio/client.py:2363);"
        "_SelectorSocketTransport.write (/py/lib/python3.11/asyncio/selector_events.py:1057) 1\n"
    )
    spots = hot_spots(raw)
    assert spots["samples"] == 4
    assert spots["waiting_pct"] == 25.0
    assert spots["task"][0]["where"] == "EvalBroker.run_worker (orchestrator/evals.py)"
    assert spots["call_site"][0]["pct"] == 100.0
    assert spots["leaf"][0]["where"] == "pydantic/main.py:792 model_validate"
