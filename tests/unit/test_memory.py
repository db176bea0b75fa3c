"""shared.memory: give_back (jemalloc's cache flush and purge where jemalloc is the process's
malloc, glibc's malloc_trim where the C library has it, else nothing) and shrink."""

from __future__ import annotations

import ctypes.util
import json
import os
import platform
import subprocess
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any

from shared.memory import give_back, shrink
from tests.conftest import require

# The free lists after a burst: uvloop keeps the last 250 callback handles freed for reuse. A
# burst of 64,000 is freed so that the ones kept are one per page of it; give_back() cannot
# return those pages, renew_free_lists() then give_back() can. jemalloc's count of the pages
# in use is read before and after.
_FREE_LISTS = """
import asyncio, ctypes, json
import uvloop
from shared.memory import _mallctl, give_back, renew_free_lists

def active():
    mallctl = _mallctl()
    epoch = ctypes.c_uint64(1)
    mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch))
    value, size = ctypes.c_size_t(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
    mallctl(b"stats.active", ctypes.byref(value), ctypes.byref(size), None, 0)
    return value.value / 2**20

async def main():
    loop = asyncio.get_running_loop()
    await renew_free_lists()
    give_back()
    base = active()
    burst = [loop.call_soon(print) for _ in range(64_000)]
    for handle in burst:
        handle.cancel()
    await asyncio.sleep(0)
    kept = burst[::256]  # freed first, so these fill the free list
    del burst[::256]
    del kept
    burst.clear()
    give_back()
    pinned = active()
    await renew_free_lists()
    give_back()
    print(json.dumps({"base": base, "pinned": pinned, "renewed": active()}))

uvloop.run(main())
"""

# A burst of small objects, all freed, then the RSS before and after give_back(): on jemalloc
# with its default configuration (no background thread) the freed pages stay until asked.
_BURST = """
import json, sys
from shared.memory import give_back

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

base = rss()
burst = [{"i": i, "s": str(i) * 8} for i in range(400_000)]
held = rss()
del burst
freed = rss()
asked = give_back()
print(json.dumps({"base": base, "held": held, "freed": freed, "after": rss(), "asked": asked}))
"""


def test_give_back_asks_the_allocator_this_process_runs_on() -> None:
    if "libjemalloc" in Path("/proc/self/maps").read_text():  # the suite run as the image runs
        expected: str | None = "jemalloc"
    else:
        expected = "glibc" if platform.libc_ver()[0] == "glibc" else None
    assert give_back() == expected
    assert give_back() == expected  # looked up once, callable again


def _on_jemalloc(script: str) -> dict[str, Any]:
    """What `script` prints (JSON), run on jemalloc in its default configuration."""
    lib = ctypes.util.find_library("jemalloc")
    require(lib is not None, "libjemalloc2 is not installed (apt-get install libjemalloc2)")
    assert lib is not None
    env = {**os.environ, "LD_PRELOAD": lib, "PYTHONMALLOC": "malloc"}
    env.pop("MALLOC_CONF", None)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    seen: dict[str, Any] = json.loads(out.stdout)
    return seen


def test_on_jemalloc_give_back_returns_a_freed_burst_at_once() -> None:
    seen = _on_jemalloc(_BURST)
    assert seen["asked"] == "jemalloc"
    burst = seen["held"] - seen["base"]
    assert burst > 50, seen  # the burst is there to give back
    assert seen["after"] - seen["base"] < 0.1 * burst, seen  # all but a little given back,
    assert seen["freed"] - seen["after"] > 0.3 * burst, seen  # and much of it by give_back


def test_renewed_free_lists_let_a_burst_s_pages_go() -> None:
    seen = _on_jemalloc(_FREE_LISTS)
    # 250 handles kept, each on a page of its own: about 5 MiB that give_back() leaves in use
    assert seen["pinned"] - seen["base"] > 3.0, seen
    assert seen["renewed"] - seen["base"] < 1.0, seen


def test_shrink_rebuilds_dicts_and_sets_in_place_keeping_what_they_hold() -> None:
    plain = {i: str(i) for i in range(20_000)}
    ordered = OrderedDict((i, i) for i in range(20_000))
    by_default: defaultdict[int, set[int]] = defaultdict(set)
    members = set(range(20_000))
    for i in range(19_990):
        del plain[i], ordered[i]
        by_default[i].add(i)
        members.discard(i)
    for i in range(19_990):
        del by_default[i]
    by_default[5].add(1)
    ordered.move_to_end(19_990)  # an order that is not insertion order
    add = members.add  # someone holds the set's bound method: it must stay this set's
    before = [sys.getsizeof(c) for c in (plain, ordered, by_default, members)]
    expected = (dict(plain), list(ordered.items()), dict(by_default), set(members))

    shrink(plain, ordered, by_default, members)

    after = [sys.getsizeof(c) for c in (plain, ordered, by_default, members)]
    assert all(b > 100 * 1024 for b in before), before
    assert all(a < 2048 for a in after), after
    assert (dict(plain), list(ordered.items()), dict(by_default), set(members)) == expected
    assert by_default.default_factory is set and isinstance(ordered, OrderedDict)
    add(-1)
    assert -1 in members
