"""This node's room for executions: its size, what an execution takes, and what is left free."""

from __future__ import annotations

import os

from shared import wire
from shared.spec import Resources


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


def demand(r: Resources) -> wire.Capacity:
    """What a task with these resources holds while it runs."""
    return wire.Capacity(
        cpu_millis=r.cpu_millis,
        memory_bytes=r.memory_bytes,
        disk_bytes=r.disk_bytes,
        gpus=r.gpus,
    )


def free(cap: wire.Capacity, used: wire.Capacity) -> wire.Capacity:
    """The room left of `cap` once `used` is taken; the execution slots are not counted here."""
    return wire.Capacity(
        cpu_millis=cap.cpu_millis - used.cpu_millis,
        memory_bytes=cap.memory_bytes - used.memory_bytes,
        disk_bytes=cap.disk_bytes - used.disk_bytes,
        gpus=cap.gpus - used.gpus,
        executions=cap.executions,
    )


def add(used: wire.Capacity, demand: wire.Capacity, sign: int) -> wire.Capacity:
    """`used` with `demand` taken (sign 1) or given back (sign -1)."""
    return wire.Capacity(
        cpu_millis=used.cpu_millis + sign * demand.cpu_millis,
        memory_bytes=used.memory_bytes + sign * demand.memory_bytes,
        disk_bytes=used.disk_bytes + sign * demand.disk_bytes,
        gpus=used.gpus + sign * demand.gpus,
    )
