"""Giving freed heap back to the system: the C allocator keeps what Python frees for reuse."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable, MutableMapping, MutableSet
from typing import Any, Literal

Allocator = Literal["jemalloc", "glibc"]

# jemalloc's name for "every arena" in `arena.<i>.*` (MALLCTL_ARENAS_ALL).
_ARENAS_ALL = 4096


@functools.cache
def _mallctl() -> Callable[..., int] | None:
    """jemalloc's control call, if jemalloc is this process's malloc (preloaded: its symbols
    are the process's own)."""
    try:
        call = ctypes.CDLL(None).mallctl
    except (OSError, AttributeError):
        return None
    pointer = ctypes.c_void_p
    call.argtypes = [ctypes.c_char_p, pointer, pointer, pointer, ctypes.c_size_t]
    call.restype = ctypes.c_int
    mallctl: Callable[..., int] = call
    return mallctl


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to ask
        return None
    return trim


def give_back() -> Allocator | None:
    """Return the memory the allocator holds free to the system, now; which allocator was
    asked, or None where it has no such call.

    jemalloc: this thread's cache of freed blocks goes back to their pages first (each cached
    block keeps a page of a burst in use), then every arena's unused pages are returned at
    once, whatever decay MALLOC_CONF set. glibc: malloc_trim(0)."""
    # CPython's free lists (floats, tuples, lists, dicts, contexts) keep up to thousands of
    # a burst's freed objects for reuse, each holding its page: a full collection empties them.
    gc.collect()
    mallctl = _mallctl()
    if mallctl is not None:
        mallctl(b"thread.tcache.flush", None, None, None, 0)
        mallctl(f"arena.{_ARENAS_ALL}.purge".encode(), None, None, None, 0)
        return "jemalloc"
    trim = _malloc_trim()
    if trim is None:
        return None
    trim(0)
    return "glibc"


# More than uvloop's free lists of callback and timer handles hold (250 each, Cython's
# @freelist) and _asyncio's of future iterators (255).
_FREE_LISTS_HOLD = 512


def _nothing() -> None:
    pass


async def renew_free_lists() -> None:
    """Refill the event loop's free lists with blocks allocated now.

    uvloop keeps up to 250 freed callback handles and 250 timer handles, and _asyncio up to
    255 future iterators, for reuse; no collection empties those lists. After a burst they
    hold blocks freed in its last moments, scattered over its pages, each keeping its page in
    use. Taking every block off the lists and freeing the newest first (now allocated at
    the lowest free addresses, which refill the lists) frees the burst's."""
    loop = asyncio.get_running_loop()
    # New blocks come from the thread's cache first, which holds the latest freed.
    gc.collect()
    mallctl = _mallctl()
    if mallctl is not None:
        mallctl(b"thread.tcache.flush", None, None, None, 0)
    handles = [loop.call_soon(_nothing) for _ in range(_FREE_LISTS_HOLD)]
    timers = [loop.call_later(86_400.0, _nothing) for _ in range(_FREE_LISTS_HOLD)]
    done = loop.create_future()
    done.set_result(None)
    iterators = [done.__await__() for _ in range(_FREE_LISTS_HOLD)]
    for handle in handles:
        handle.cancel()
    for timer in timers:
        timer.cancel()
    await asyncio.sleep(0)  # the loop lets go of the cancelled handles it had queued
    for held in (handles, timers, iterators):
        while held:
            held.pop()  # newest first: those go back on the list, the older ones are freed


def shrink(*containers: MutableMapping[Any, Any] | MutableSet[Any]) -> None:
    """Rebuild each dict or set in place at the size of what it holds now.

    A dict or set never shrinks as its keys go: one that held a burst's jobs for a moment
    keeps a table for all of them (hundreds of KiB at ten thousand) until it next grows. In
    place, so whoever else holds it (a bound `add`) keeps the same object."""
    for container in containers:
        if isinstance(container, MutableMapping):
            held = dict(container)  # a copy sized to its contents, kept in order
            container.clear()
            container.update(held)
        else:
            kept = set(container)
            container.clear()
            container |= kept
