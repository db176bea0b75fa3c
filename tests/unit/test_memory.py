"""shared.memory.give_back: jemalloc's cache flush and purge where jemalloc is the process's
malloc, glibc's malloc_trim where the C library has it, else nothing."""

from __future__ import annotations

import ctypes.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from shared.memory import give_back
from tests.conftest import require

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


def test_on_jemalloc_give_back_returns_a_freed_burst_at_once() -> None:
    lib = ctypes.util.find_library("jemalloc")
    require(lib is not None, "libjemalloc2 is not installed (apt-get install libjemalloc2)")
    assert lib is not None
    env = {**os.environ, "LD_PRELOAD": lib, "PYTHONMALLOC": "malloc"}
    env.pop("MALLOC_CONF", None)
    out = subprocess.run(
        [sys.executable, "-c", _BURST], env=env, capture_output=True, text=True, check=True
    )
    seen = json.loads(out.stdout)
    assert seen["asked"] == "jemalloc"
    burst = seen["held"] - seen["base"]
    assert burst > 50, seen  # the burst is there to give back
    assert seen["after"] - seen["base"] < 0.1 * burst, seen  # all but a little given back,
    assert seen["freed"] - seen["after"] > 0.3 * burst, seen  # and much of it by give_back
