"""wire.Capacity: the one type for a node's size, its free room and an execution's demand."""

from __future__ import annotations

from shared import wire
from shared.spec import spec_from_data

NODE = wire.Capacity(cpu_millis=2000, memory_bytes=4096, disk_bytes=100, gpus=1, executions=8)


def demand(**kw: int) -> wire.Capacity:
    return wire.Capacity(**kw)


def test_short_of_names_the_first_resource_that_does_not_fit() -> None:
    assert NODE.short_of(demand(cpu_millis=2000, memory_bytes=4096, gpus=1)) is None
    assert NODE.short_of(demand(cpu_millis=2001)) == "CPU"
    assert NODE.short_of(demand(memory_bytes=4097)) == "memory"
    assert NODE.short_of(demand(gpus=2)) == "GPUs"
    assert NODE.fits(demand(cpu_millis=1))
    assert not NODE.fits(demand(gpus=2))


def test_disk_is_not_reserved() -> None:
    assert NODE.fits(demand(disk_bytes=10**12))


def test_minus_and_plus_keep_the_slot_count() -> None:
    used = demand(cpu_millis=500, memory_bytes=1000, disk_bytes=10, gpus=1)
    free = NODE.minus(used)
    assert free == wire.Capacity(
        cpu_millis=1500, memory_bytes=3096, disk_bytes=90, gpus=0, executions=8
    )
    assert free.plus(used) == NODE
    assert not free.fits(demand(gpus=1))
    # Overcommitted room goes below zero rather than being clamped: the next release must
    # bring it back to exactly what it was.
    assert free.minus(demand(cpu_millis=2000)).cpu_millis == -500


def test_of_a_task_takes_its_resources() -> None:
    spec = spec_from_data(
        {
            "Type": "batch",
            "Tasks": [
                {
                    "Engine": {"Type": "noop"},
                    "Resources": {"CPU": "500m", "Memory": "1Gi", "Disk": "2Gi", "GPU": "1"},
                }
            ],
        }
    )
    assert wire.Capacity.of(spec.task.resources) == wire.Capacity(
        cpu_millis=500, memory_bytes=1024**3, disk_bytes=2 * 1024**3, gpus=1
    )


def test_roomier_than_any_resource_or_slot() -> None:
    assert not NODE.roomier_than(NODE)
    assert NODE.plus(demand(gpus=1)).roomier_than(NODE)
    assert wire.Capacity(executions=9).roomier_than(wire.Capacity(executions=8))
    assert not NODE.minus(demand(cpu_millis=1)).roomier_than(NODE)
