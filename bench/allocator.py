"""Which memory allocator a benchmarked Shoal process runs on: CPython's own, or jemalloc.

CPython's small-object allocator gives a 1 MiB arena back only when every object in it is gone
(bench/arenas.py), so an orchestrator keeps the peak of a burst of jobs for good. With
`PYTHONMALLOC=malloc` every allocation goes to the C allocator; jemalloc, preloaded, hands the
freed pages of a burst back within a second (its background thread purges them while the
process idles). deploy/Dockerfile runs every Shoal process this way, with this configuration.
"""

from __future__ import annotations

import ctypes.util
from pathlib import Path

ALLOCATORS = ("pymalloc", "jemalloc")
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"


def allocator_env(name: str) -> dict[str, str]:
    """The environment variables that run a Python process on `name`."""
    if name == "pymalloc":
        return {}
    if name != "jemalloc":
        raise ValueError(f"unknown allocator {name!r}: one of {', '.join(ALLOCATORS)}")
    lib = ctypes.util.find_library("jemalloc")
    if lib is None:
        raise RuntimeError(
            "--allocator jemalloc: no libjemalloc on this machine "
            "(Debian: apt-get install libjemalloc2; `make bench` installs it)"
        )
    return {"LD_PRELOAD": lib, "PYTHONMALLOC": "malloc", "MALLOC_CONF": JEMALLOC_CONF}


def loaded(pid: int, name: str) -> bool:
    """Whether process `pid` has `name`'s library mapped (pymalloc: always, it is built in)."""
    if name == "pymalloc":
        return True
    maps = Path(f"/proc/{pid}/maps").read_text()
    return f"lib{name}" in maps
