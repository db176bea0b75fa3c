"""The log tail looks at a quiet file less and less often, and at once more often when it grows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

from compute.logs import LogShipper
from shared.bus import Bus
from tests.conftest import eventually


class MemoryBus:
    """Only what the shipper uses: durable publishes, kept in memory."""

    def __init__(self) -> None:
        self.shipped: list[bytes] = []

    async def js_publish(self, subject: str, data: bytes) -> int:
        self.shipped.append(data)
        return len(self.shipped)


class CountingShipper(LogShipper):
    looks = 0

    async def ship(self) -> bool:
        self.looks += 1
        return await super().ship()


async def test_a_quiet_file_is_looked_at_less_often_until_it_grows(tmp_path: Path) -> None:
    out = tmp_path / "stdout"
    out.write_bytes(b"")
    bus = MemoryBus()
    shipper = CountingShipper(cast(Bus, bus), out, "j", "e", "stdout", interval=0.05)
    shipper._idle_interval = 2.0
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(shipper.follow())
        await asyncio.sleep(2.0)
        # every 0.05 s that would be 40 looks; backing off (0.05, 0.1, 0.2, ... 1.6) about 6
        quiet = shipper.looks
        assert 3 <= quiet <= 14, quiet
        out.write_bytes(b"hello\n")
        await eventually(lambda: bus.shipped == [b"hello\n"], timeout=4, what="shipped")
        with out.open("ab") as f:  # right after it grew, it is looked at often again
            f.write(b"again\n")
        # well within the 2 s a look takes when quiet
        await eventually(lambda: len(bus.shipped) == 2, timeout=1.0, what="second line soon")
        shipper.stop()
    assert bus.shipped == [b"hello\n", b"again\n"]
