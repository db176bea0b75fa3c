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


def test_misfit_names_the_short_resource_in_all_or_free() -> None:
    from orchestrator.selection import NodeState, misfit

    node = NodeState(
        id="n1",
        labels={},
        engines=frozenset({"noop"}),
        publishers=frozenset({"nats", "noop"}),
        sources=frozenset(),
        capacity=NODE,
        free=NODE.minus(demand(cpu_millis=1500, memory_bytes=4000)),
    )

    def why(resources: dict[str, str]) -> str | None:
        spec = spec_from_data(
            {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop"}, "Resources": resources}]}
        )
        return misfit(node, spec, wire.Capacity.of(spec.task.resources), [])

    assert why({"CPU": "3"}) == "too little CPU (3 asked, 2 in all)"
    assert why({"GPU": "2"}) == "too few GPUs (2 asked, 1 in all)"
    assert why({"CPU": "1"}) == "busy: 500m CPU free, 1 asked"
    assert why({"Memory": "1Ki"}) == "busy: 96 B memory free, 1.0 KiB asked"
    assert why({"CPU": "500m", "GPU": "1"}) is None
