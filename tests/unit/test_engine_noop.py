"""The noop engine: output, exit code, sleep against timeout, and cancellation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from compute.engines.base import RunRequest
from compute.engines.noop import NoopEngine
from shared.errors import ExecutionFailed
from shared.spec.params import NoopParams


def _request(tmp_path: Path, params: dict[str, Any], **kwargs: Any) -> RunRequest:
    return RunRequest(
        execution_id="e-1",
        job_id="j-1",
        params=NoopParams.model_validate(params),
        workdir=tmp_path,
        stdout_path=tmp_path / "stdout",
        stderr_path=tmp_path / "stderr",
        **kwargs,
    )


async def test_probe() -> None:
    assert await NoopEngine().probe()


async def test_writes_output_and_exits_with_code(tmp_path: Path) -> None:
    (tmp_path / "stdout").write_text("before\n")
    params = {"Stdout": "out\n", "Stderr": "err\n", "ExitCode": 7}
    result = await NoopEngine().run(_request(tmp_path, params))
    assert (result.exit_code, result.error, result.timed_out) == (7, "", False)
    assert (tmp_path / "stdout").read_text() == "before\nout\n"
    assert (tmp_path / "stderr").read_text() == "err\n"


async def test_empty_params_write_no_output_files(tmp_path: Path) -> None:
    # Nothing printed, nothing to tail or ship: the files are not even created.
    assert (await NoopEngine().run(_request(tmp_path, {}))).exit_code == 0
    assert not (tmp_path / "stdout").exists()
    assert not (tmp_path / "stderr").exists()


async def test_sleep_shorter_than_timeout_completes(tmp_path: Path) -> None:
    started = time.monotonic()
    result = await NoopEngine().run(_request(tmp_path, {"Sleep": 0.2}, timeout=5))
    assert 0.2 <= time.monotonic() - started < 1
    assert not result.timed_out


@pytest.mark.parametrize("sleep", [10, "forever"])
async def test_sleep_longer_than_timeout_times_out(tmp_path: Path, sleep: float | str) -> None:
    started = time.monotonic()
    result = await NoopEngine().run(_request(tmp_path, {"Sleep": sleep}, timeout=0.3))
    assert time.monotonic() - started < 1
    assert result.timed_out
    assert result.exit_code == -1
    assert result.error == "execution timed out after 0.3s"


async def test_forever_stops_on_cancel(tmp_path: Path) -> None:
    task = asyncio.create_task(NoopEngine().run(_request(tmp_path, {"Sleep": "forever"})))
    await asyncio.sleep(0.1)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_error_raises_not_retryable(tmp_path: Path) -> None:
    with pytest.raises(ExecutionFailed, match="boom") as info:
        await NoopEngine().run(_request(tmp_path, {"Error": "boom", "Stdout": "x"}))
    assert not info.value.retryable
    assert (tmp_path / "stdout").read_text() == "x"
