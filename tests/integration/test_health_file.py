"""`shoal orchestrator|compute --health-file` as real processes, checked by `shoal health`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.natsserver import EmbeddedNats
from tests.conftest import eventually, terminate
from tests.integration.helpers_jobs import SHOAL, Completed, run_cli


@contextlib.asynccontextmanager
async def process(
    url: str, log: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`shoal --nats URL ARGS...` in the background; SIGTERM (what the kubelet sends) after."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(SHOAL),
            "--nats",
            url,
            *args,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=out,
        )
    try:
        yield proc
    finally:
        if not await terminate(proc):
            raise AssertionError(f"shoal {args} ignored SIGTERM: {log.read_text()}")


async def health(path: Path, url: str, *args: str) -> Completed:
    return await run_cli("health", str(path), *args, url=url, timeout=30)


def contents(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    return data


@pytest.mark.slow  # the files are rewritten every 5 s, and the test waits for a few writes
async def test_services_write_a_health_file_that_shoal_health_checks(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    url = nats_server.url
    orch_file = tmp_path / "orchestrator" / "health"
    compute_file = tmp_path / "compute-health"
    name = "ip-10-0-0-7.ec2.internal"  # a cloud node name: becomes node id ip-10-0-0-7-ec2-internal
    async with (
        process(
            url,
            tmp_path / "orchestrator.log",
            "orchestrator",
            "--heartbeat-interval",
            "0.2",
            "--health-file",
            str(orch_file),
        ) as orch,
        process(
            url,
            tmp_path / "compute.log",
            "compute",
            "--name",
            name,
            "--heartbeat-interval",
            "0.2",
            "--state-dir",
            str(tmp_path / "state"),
            env={"SHOAL_HEALTH_FILE": str(compute_file)},  # the option's environment variable
        ) as agent,
    ):

        async def passes(path: Path) -> Completed | None:
            done = await health(path, url)
            return done if done.code == 0 else None

        done = await eventually(lambda: passes(orch_file), timeout=30, what="a live orchestrator")
        assert done.stdout.startswith("ok: orchestrator ") and "leader" in done.stdout, done
        assert done.stdout.count("\n") == 1 and "NATS connected" in done.stdout, done
        record = contents(orch_file)
        assert record["role"] == "orchestrator" and record["pid"] == orch.pid
        assert record["ok"] is True and record["nats_connected"] is True
        assert record["leading"] is True

        def registered() -> bool:
            record = contents(compute_file) if compute_file.exists() else {}
            return record.get("registered") is True

        await eventually(registered, timeout=30, what="the agent's file to say registered")
        record = contents(compute_file)
        assert record["pid"] == agent.pid and record["name"] == name
        assert record["node_id"] == "ip-10-0-0-7-ec2-internal"
        assert record["approval"] == "APPROVED" and record["running"] == 0
        done = await health(compute_file, url)
        assert done.code == 0, done
        assert "(node ip-10-0-0-7-ec2-internal)" in done.stdout, done
        # The orchestrator's mirror sees the node at its next write.
        await eventually(
            lambda: contents(orch_file)["nodes"] == 1, timeout=15, what="the node counted"
        )

        # NATS goes away: both processes stay up, and both files say so at their next write.
        await nats_server.stop()
        for path in (orch_file, compute_file):

            async def fails(path: Path = path) -> Completed | None:
                done = await health(path, url)
                return done if done.code == 1 else None

            done = await eventually(fails, timeout=20, what=f"{path} to report the outage")
            assert "NATS disconnected" in done.stderr, done
            # a liveness probe may tolerate a short outage
            tolerant = await health(path, url, "--max-disconnected", "300")
            assert tolerant.code == 0, tolerant
        assert orch.returncode is None and agent.returncode is None

    # Stopped: the files are gone, so a stopped process never passes.
    assert orch.returncode == 0 and agent.returncode == 0
    for path in (orch_file, compute_file):
        done = await health(path, url)
        assert done.code == 1, done
        assert f"no health file at {path}" in done.stderr, done
