"""What the state mirror needs of the JetStream KV buckets, as Protocols a test double can meet.

`shared.bus.Bus` opens buckets (`Buckets`) and `shared.bus.KV` is one (`KV`); the mirror takes
anything with these methods, so tests hand it an in-memory bucket, or a real one wrapped to
hold back an acknowledgement or a watch, instead of reaching into its attributes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from shared.bus import Entry


class KV(Protocol):
    """A key-value bucket with compare-and-swap writes (`shared.bus.KV` is the real one)."""

    bucket: str

    async def get(self, key: str) -> Entry | None:
        """The key's entry, or None if it has none."""
        ...

    async def create(self, key: str, value: bytes) -> int:
        """Write only if the key has no value; the new revision, or Conflict."""
        ...

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Write only if the key is still at `revision` (0: has no value); or Conflict."""
        ...

    async def delete(self, key: str, revision: int | None = None) -> None:
        """Delete the key; with `revision`, only if it is still at that revision."""
        ...

    def watch(self, pattern: str = ">", *, since: int = 0) -> AsyncIterator[Entry | None]:
        """Current values, then None (caught up), then every change, forever. With `since`,
        every write from that revision on instead of the current values."""
        ...

    async def follow(
        self, pattern: str, apply: Callable[[Entry | None], None], *, since: int = 0
    ) -> None:
        """`watch`, calling `apply` with each entry (None once caught up) until cancelled."""
        ...

    async def last_revision(self) -> int:
        """The revision of the bucket's newest write (0: none yet)."""
        ...

    async def entries(self) -> int:
        """How many entries the bucket stores (every revision it keeps, delete markers too)."""
        ...

    async def latest(self, patterns: Sequence[str]) -> list[Entry] | None:
        """The newest entry under each pattern (delete markers too) in a few requests; None
        where the bucket is not read that way."""
        ...


class Buckets(Protocol):
    """Opens KV buckets by name (`shared.bus.Bus` does, creating them if needed)."""

    async def kv(self, bucket: str, *, republish: tuple[str, str] | None = None) -> KV:
        """The bucket; `republish` = (source, destination) subjects for its stored writes."""
        ...
