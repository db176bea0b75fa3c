"""Storage that fills up: every namespace's results object store gets a size limit past which
its oldest archives are discarded, so a full store never fails a submit or stops a copy."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from shared import results
from shared.bus import Bus
from shared.errors import ShoalError

log = logging.getLogger(__name__)


class _StreamNames(msgspec.Struct):
    streams: list[str] | None = None
    total: int = 0


async def limit_result_stores(bus: Bus, max_bytes: int | None) -> list[str]:
    """Give every namespace's results object store (`OBJ_shoal-results-ns-*`) a size limit past
    which its oldest archives are discarded; the streams changed. The copies made by
    results_handoff.py create these buckets as a namespace's first results arrive, so the
    leader runs this now and then."""
    if max_bytes is None:
        return []
    names: list[str] = []
    while True:  # every stream, a page (of up to 1,024 names) at a time
        query = msgspec.json.encode({"offset": len(names)})
        page = msgspec.json.decode(
            await bus.request("$JS.API.STREAM.NAMES", query), type=_StreamNames
        )
        names += page.streams or []
        if not page.streams or len(names) >= page.total:
            break
    changed = []
    for stream in names:
        if not stream.startswith(f"OBJ_{results.NAMESPACE_BUCKET_PREFIX}"):
            continue
        info: dict[str, Any] = msgspec.json.decode(
            await bus.request(f"$JS.API.STREAM.INFO.{stream}", b"")
        )
        config = info.get("config")
        if not isinstance(config, dict):
            continue
        if config.get("max_bytes") == max_bytes and config.get("discard") == "old":
            continue
        config.update(max_bytes=max_bytes, discard="old")
        answer: dict[str, Any] = msgspec.json.decode(
            await bus.request(f"$JS.API.STREAM.UPDATE.{stream}", msgspec.json.encode(config))
        )
        if "error" in answer:
            raise ShoalError(f"limit {stream} to {max_bytes} bytes: {answer['error']}")
        changed.append(stream)
    return changed


async def limit_result_stores_forever(bus: Bus, max_bytes: int | None, every: float) -> None:
    while max_bytes is not None:
        try:
            await limit_result_stores(bus, max_bytes)
        except ShoalError as exc:
            log.warning("limiting the results object stores: %s", exc)
        await asyncio.sleep(every)
