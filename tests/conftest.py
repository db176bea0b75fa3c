"""Shared test fixtures: a real nats-server per test, eventually(), and capability checks."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shared.bus import Bus
from shared.natsserver import EmbeddedNats

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(capability: bool, why: str) -> None:
    """Skip on a laptop without the capability; under CI=true a missing capability fails."""
    if capability:
        return
    if IN_CI:
        pytest.fail(f"required capability missing under CI=true: {why}")
    pytest.skip(why)


async def terminate(proc: asyncio.subprocess.Process, grace: float = 20.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds; whether it exited on the SIGTERM."""
    if proc.returncode is not None:
        return True
    proc.terminate()
    try:
        async with asyncio.timeout(grace):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False
    return True


async def eventually(
    check: Callable[[], Awaitable[T] | T],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `check` until it returns a truthy value (or stops raising AssertionError)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
                result = await result
            if result:
                return result  # type: ignore[return-value]
            last_error = None
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() > deadline:
            detail = f": {last_error}" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        await asyncio.sleep(interval)


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def bus(nats_server: EmbeddedNats) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_server.url, name="test")
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
def anyio_backend() -> Any:
    return "asyncio"
