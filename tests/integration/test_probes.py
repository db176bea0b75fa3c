"""/healthz and /readyz over HTTP: an orchestrator in-process (ready once started, unhealthy when
NATS goes away), and `shoal compute` and `shoal orchestrator --metrics-port` as processes (the
agent ready once an orchestrator registered it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.service import Orchestrator
from shared.bus import Bus
from shared.natsserver import EmbeddedNats
from shared.probes import Probes
from tests.conftest import eventually, terminate
from tests.integration.helpers_jobs import SHOAL, free_port
from tests.integration.stack import FAST, leading


async def get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; (0, why) when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as response,
        ):
            return response.status, await response.text()
    except aiohttp.ClientConnectionError as exc:
        return 0, str(exc)


async def answers(url: str, status: int) -> bool:
    return (await get(url))[0] == status


async def test_orchestrator_ready_once_started_and_unhealthy_without_nats(
    nats_server: EmbeddedNats,
) -> None:
    bus = await Bus.connect(nats_server.url, name="orchestrator")
    started = False
    try:
        async with Probes(host="127.0.0.1", port=0, buses=[bus], ready=lambda: started) as probes:
            assert probes.port > 0
            assert await get(f"{probes.url}/healthz") == (200, "ok\n")
            assert await get(f"{probes.url}/readyz") == (503, "not ready\n")
            async with Orchestrator(bus, FAST) as orch:
                await leading(orch)
                started = True
                assert await get(f"{probes.url}/readyz") == (200, "ready\n")
                started = False
            assert (await get(f"{probes.url}/readyz"))[0] == 503
            await nats_server.stop()
            await eventually(
                lambda: answers(f"{probes.url}/healthz", 503), what="/healthz 503 without NATS"
            )
            status, why = await get(f"{probes.url}/readyz")
            assert (status, why) == (503, "1 of 1 NATS connection(s) down\n")
        # stopped: nothing listens any more (and stop() again is harmless)
        await probes.stop()
        assert (await get(f"{probes.url}/healthz"))[0] == 0
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def shoal(url: str, log: Path, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(SHOAL), "--nats", url, *args, env=dict(os.environ), stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if not await terminate(proc):
            raise AssertionError(f"shoal {args} ignored SIGTERM: {log.read_text()}")


async def test_compute_and_orchestrator_serve_probes_and_metrics(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    url = nats_server.url
    agent_port, orch_port = free_port(), free_port()
    agent = f"http://127.0.0.1:{agent_port}"
    orch = f"http://127.0.0.1:{orch_port}"
    async with shoal(
        url,
        tmp_path / "compute.log",
        "compute",
        "--name",
        "probed",
        "--engines",
        "noop",
        "--state-dir",
        str(tmp_path / "compute"),
        "--metrics-port",
        str(agent_port),
        "--metrics-host",
        "127.0.0.1",
    ):
        # Up and connected, but no orchestrator has answered its hello: alive, not ready.
        await eventually(lambda: answers(f"{agent}/healthz", 200), what="the agent's /healthz")
        assert (await get(f"{agent}/readyz"))[0] == 503
        async with shoal(
            url,
            tmp_path / "orchestrator.log",
            "orchestrator",
            "--heartbeat-interval",
            "0.2",
            "--metrics-port",
            str(orch_port),
        ):
            await eventually(lambda: answers(f"{orch}/readyz", 200), what="the orchestrator ready")
            await eventually(lambda: answers(f"{agent}/readyz", 200), what="the agent registered")
            assert (await get(f"{orch}/healthz"))[0] == 200

            async def one_node() -> bool:
                _, text = await get(f"{orch}/metrics")
                samples = {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                }
                return (
                    samples.get(("shoal_leader", ())) == 1
                    and samples.get(
                        ("shoal_nodes", (("approval", "APPROVED"), ("connection", "CONNECTED")))
                    )
                    == 1
                )

            await eventually(one_node, what="the orchestrator's metrics showing one node")
            status, text = await get(f"{agent}/metrics")
            assert status == 200
            names = {f.name for f in text_string_to_metric_families(text)}
            assert {"shoal_agent_running_executions", "shoal_nats_reconnects"} <= names
