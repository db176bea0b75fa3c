"""The one compare-and-swap retry loop: re-read, decide, write on the revision read, again on a
lost race, and `Conflict` when the record kept changing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.errors import Conflict

T = TypeVar("T")

#: Writes lost to other writers before a change gives up. Each attempt re-reads the record, so
#: only a record changing faster than one round trip can exhaust them.
CAS_ATTEMPTS = 5


async def retry_cas(
    attempt: Callable[[], Awaitable[T]], *, what: str, attempts: int = CAS_ATTEMPTS
) -> T:
    """Run `attempt` (read the record, decide, write on the revision read) until it does not
    lose its write; its `Conflict` means another writer came first.

    Raises `Conflict` naming `what` once `attempts` writes were lost in a row: the caller
    must never act as if the last one had been stored.
    """
    for _ in range(attempts - 1):
        try:
            return await attempt()
        except Conflict:
            continue
    try:
        return await attempt()
    except Conflict as exc:
        raise Conflict(
            f"{what} kept changing: {attempts} writes in a row lost to other writers; try again"
        ) from exc
