"""Timestamps of each job's steps in every process, for the benchmark's timeline
(`python -m bench latency --trace`): off, and one check per step, unless SHOAL_TRACE names a
directory."""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path

_dir: Path | None = None
_marks: list[str] = []


def enable(directory: Path) -> None:
    """Record marks into `directory/<pid>.txt` (one file per process: no interleaved lines)."""
    global _dir
    directory.mkdir(parents=True, exist_ok=True)
    if _dir is None:
        atexit.register(flush)
    _dir = directory


def mark(step: str, job_id: str) -> None:
    if _dir is not None:
        _marks.append(f"{time.time():.6f} {step} {job_id}\n")
        if len(_marks) >= 64:
            flush()


def disable() -> None:
    """Write what is pending and stop recording."""
    global _dir
    flush()
    _dir = None


def flush() -> None:
    if _dir is not None and _marks:
        with (_dir / f"{os.getpid()}.txt").open("a", encoding="utf-8") as f:
            f.writelines(_marks)
        _marks.clear()


if os.environ.get("SHOAL_TRACE"):
    enable(Path(os.environ["SHOAL_TRACE"]))
