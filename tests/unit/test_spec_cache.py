"""orchestrator.spec_cache.SpecCache: parsed specs are reused, checked against the stored bytes,
and bounded (least recently used go first), so a burst of jobs does not hold one parse each."""

from __future__ import annotations

import json

import msgspec

from orchestrator.spec_cache import SpecCache
from shared import wire
from shared.spec import spec_from_data

SPEC = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop"}}]}
CANONICAL = json.dumps(spec_from_data(SPEC).dump()).encode()


def job(i: int, spec: bytes = CANONICAL, version: int = 1) -> wire.JobRecord:
    return wire.JobRecord(
        id=f"j-{i}",
        name=f"j-{i}",
        namespace="default",
        type="batch",
        spec=msgspec.Raw(spec),
        version=version,
    )


def test_a_remembered_spec_is_not_parsed_again() -> None:
    cache = SpecCache()
    spec = spec_from_data(SPEC)
    cache.remember(job(1), spec)
    assert cache.spec_of(job(1)) is spec


def test_a_parsed_spec_is_reused_for_the_same_id_version_and_bytes() -> None:
    cache = SpecCache()
    first = cache.spec_of(job(1))
    assert cache.spec_of(job(1)) is first
    assert cache.spec_of(job(1, version=2)) is not first  # another version: its own parse
    other = json.dumps(spec_from_data({**SPEC, "Count": 3}).dump()).encode()
    assert cache.spec_of(job(1, spec=other)).count == 3  # other bytes: never the cached one


def test_the_cache_holds_at_most_its_limit_the_least_recently_used_going_first() -> None:
    cache = SpecCache(limit=3)
    zero, one = cache.spec_of(job(0)), cache.spec_of(job(1))
    cache.spec_of(job(2))
    assert cache.spec_of(job(0)) is zero  # used again: the most recent (1, 2, 0)
    cache.spec_of(job(3))  # pushes out job 1, the least recently used
    assert len(cache) == 3
    assert cache.spec_of(job(0)) is zero
    assert cache.spec_of(job(1)) is not one  # parsed again
    for i in range(100, 1100):
        cache.spec_of(job(i))
    assert len(cache) == 3


def test_forget_drops_the_job_s_parse() -> None:
    cache = SpecCache()
    first = cache.spec_of(job(1))
    cache.forget(job(1))
    assert len(cache) == 0
    assert cache.spec_of(job(1)) is not first
