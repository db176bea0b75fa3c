"""This node's size: as configured, or this machine's cores and memory."""

from __future__ import annotations

import os

from shared import wire


def _machine_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 4 * 1024**3


def node_capacity(
    *, cpu_millis: int, memory_bytes: int, disk_bytes: int, gpus: int, max_executions: int
) -> wire.Capacity:
    """The node's size as configured; a CPU or memory of 0 means this machine's."""
    return wire.Capacity(
        cpu_millis=cpu_millis or (os.cpu_count() or 1) * 1000,
        memory_bytes=memory_bytes or _machine_memory(),
        disk_bytes=disk_bytes,
        gpus=gpus,
        executions=max_executions,
    )
