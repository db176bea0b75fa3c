"""`python -m bench.restart` works end to end at a tiny size: a burst, then restarts over copies
of its store, each timed until the API answers (no figure asserted but that)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_restart_bench_times_restarts_over_one_stored_burst(tmp_path: Path) -> None:
    out = tmp_path / "restart.json"
    kept = tmp_path / "store"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench.restart", "--n", "20", "--waves", "2"),
            *("--rounds", "2", "--allocator", "pymalloc", "--keep", str(kept)),
            *("--json", str(out)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert len(runs) == 2 and all(r["api_s"] > 0 for r in runs)
    # Both restarts read the same store: the same jobs unsettled in each.
    assert runs[0]["unsettled"] == runs[1]["unsettled"] <= 20
    assert (kept / "jetstream").is_dir()
