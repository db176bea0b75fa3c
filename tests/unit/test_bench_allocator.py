"""bench/allocator.py: the environment that runs a benchmarked process on an allocator."""

from __future__ import annotations

import os

import pytest

from bench import allocator
from bench.allocator import JEMALLOC_CONF, allocator_env, loaded


def test_pymalloc_is_the_default_environment() -> None:
    assert allocator_env("pymalloc") == {}
    assert loaded(os.getpid(), "pymalloc")


def test_jemalloc_preloads_the_library_and_sends_every_allocation_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: f"lib{name}.so.2")
    assert allocator_env("jemalloc") == {
        "LD_PRELOAD": "libjemalloc.so.2",
        "PYTHONMALLOC": "malloc",
        "MALLOC_CONF": JEMALLOC_CONF,
    }


def test_a_missing_jemalloc_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install libjemalloc2"):
        allocator_env("jemalloc")


def test_an_unknown_allocator_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="pymalloc, jemalloc"):
        allocator_env("tcmalloc")


def test_this_process_is_not_on_jemalloc() -> None:
    assert not loaded(os.getpid(), "jemalloc")
