"""shared.memory.give_back: glibc's malloc_trim where the C library has it, else nothing."""

from __future__ import annotations

import platform

from shared.memory import give_back


def test_give_back_trims_where_the_c_library_can() -> None:
    glibc = platform.libc_ver()[0] == "glibc"
    assert give_back() is glibc
    assert give_back() is glibc  # looked up once, callable again
