"""bench/arenas.py: pymalloc's arenas and live bytes, read from sys._debugmallocstats."""

from __future__ import annotations

from pathlib import Path

from bench.arenas import pymalloc_stats, read_reports, write_report


def test_live_small_objects_show_in_the_bytes_and_the_arenas() -> None:
    before = pymalloc_stats()
    held = [object() for _ in range(200_000)]  # 16 bytes each: about 3 MiB of small blocks
    during = pymalloc_stats()
    assert during["allocated_bytes"] - before["allocated_bytes"] >= 2_500_000
    # The arenas hold the bytes (a process with free pools to spare may need no new arena).
    assert during["arenas"] * 2**20 >= during["allocated_bytes"] + during["free_pool_bytes"]
    del held
    after = pymalloc_stats()
    assert after["allocated_bytes"] < during["allocated_bytes"] - 2_500_000


def test_reports_append_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "arenas.jsonl"
    assert read_reports(path) == []
    write_report(path)
    write_report(path)
    reports = read_reports(path)
    assert len(reports) == 2 and all(r["arenas"] > 0 for r in reports)
