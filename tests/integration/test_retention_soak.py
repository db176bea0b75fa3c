"""`python -m bench soak` works end to end at a tiny size: waves, a restart, purges by retention
down to nothing in JetStream, over the stored jobs and as new ones end (no figure asserted but
that)."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]


def run_soak(tmp_path: Path, *extra: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench", "soak", "--n", "20", "--waves", "2", "--agents", "1"),
            *("--retention", "2", "--json", str(out), *extra),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())["results"]["soak"], done.stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_soak_scenario_runs_and_retention_empties_jetstream(tmp_path: Path) -> None:
    soak, stdout = run_soak(tmp_path)
    assert soak["allocator"] == "pymalloc"
    assert [w["jobs"] for w in soak["waves_measured"]] == [10, 20]
    assert soak["restart"]["stored_jobs"] == 21
    assert soak["restart"]["api_s"] > 0 and soak["restart"]["scheduled_s"] > 0
    # The bench waits until the jobs' streams hold nothing, so getting here is the check:
    # once over the stored backlog, once for jobs purged as they end.
    assert soak["backlog"]["jobs"] == 21 and soak["backlog"]["empty_after_restart_s"] > 0
    steady = soak["retention"]
    assert steady["jobs"] == 20 and steady["empty_after_last_end_s"] > 0
    assert len(steady["rss_by_wave_mib"]) == 2 and steady["rss_after_mib"] > 0
    # The orchestrator's own pymalloc state, read through its SIGUSR1 report at both ends.
    for arenas in (steady["arenas_start"], steady["arenas_after"]):
        assert arenas["arenas"] > 0 and arenas["allocated_bytes"] > 2**20
    assert "RSS per 1,000 finished jobs" in stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_orchestrator_runs_and_purges_on_jemalloc_as_the_image_runs_it(tmp_path: Path) -> None:
    """deploy/Dockerfile preloads jemalloc with PYTHONMALLOC=malloc: the orchestrator runs,
    purges and answers on it, and the library is mapped into its process."""
    require(ctypes.util.find_library("jemalloc") is not None, "libjemalloc2 is not installed")
    soak, stdout = run_soak(tmp_path, "--allocator", "jemalloc")
    assert soak["allocator"] == "jemalloc"
    steady = soak["retention"]
    assert steady["jobs"] == 20 and steady["empty_after_last_end_s"] > 0
    assert steady["arenas_after"] == {}  # nothing goes through pymalloc
    assert "(jemalloc)" in stdout
