"""Cloud node names (`ip-10-0-0-1.ec2.internal`) on a secured deployment: `shoal auth init`
and `shoal compute --name` derive the same node id, so the agent registers and runs jobs."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from cli.auth import generate
from orchestrator.service import Orchestrator, OrchestratorConfig
from shared import subjects
from shared.bus import Bus
from shared.client import ShoalClient
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually, terminate

SHOAL = Path(sys.executable).parent / "shoal"
FAST = OrchestratorConfig(heartbeat_interval=0.2, disconnect_timeout=2.0, bid_timeout=2.0)
NAMES = ["ip-10-0-0-1.ec2.internal", "ip-10-0-0-2.ec2.internal"]


@contextlib.asynccontextmanager
async def compute_process(url: str, creds: Path, name: str, tmp: Path) -> AsyncIterator[Path]:
    """`shoal compute --name NAME` with the creds file made for NAME, as the DaemonSet runs it."""
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(SHOAL),
            "--nats",
            url,
            "--creds",
            str(creds),
            "compute",
            "--name",
            name,
            "--engines",
            "noop",
            "--heartbeat-interval",
            "0.2",
            "--state-dir",
            str(tmp / "state"),
            stdout=out,
            stderr=out,
        )
    try:
        yield log
    finally:
        await terminate(proc)
        assert proc.returncode == 0, log.read_text()


async def test_dotted_node_names_register_and_run_jobs(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    generate(auth, nodes=NAMES, orchestrators=1, users=["alice"])
    creds = auth / "creds"
    ids = {subjects.node_id_from(n): n for n in NAMES}
    assert set(ids) == {"ip-10-0-0-1-ec2-internal", "ip-10-0-0-2-ec2-internal"}
    async with EmbeddedNats(tmp_path / "nats", config=auth / "nats-server.conf") as server:
        bus = await Bus.connect(server.url, creds=str(creds / "orchestrator-1.creds"))
        try:
            async with (
                Orchestrator(bus, FAST),
                compute_process(server.url, creds / f"{NAMES[0]}.creds", NAMES[0], tmp_path),
                compute_process(server.url, creds / f"{NAMES[1]}.creds", NAMES[1], tmp_path),
                await ShoalClient.connect(server.url, str(creds / "alice.creds")) as alice,
            ):

                async def both_registered() -> bool:
                    nodes = await alice.nodes()
                    found = {n.id: n.labels.get("hostname") for n in nodes}
                    return found == ids and all(n.connection == "CONNECTED" for n in nodes)

                await eventually(both_registered, timeout=30, what="both dotted nodes")
                job_id = await alice.submit(
                    {
                        "Name": "on-cloud-nodes",
                        "Type": "batch",
                        "Count": 2,
                        "Tasks": [
                            {
                                "Name": "main",
                                "Engine": {"Type": "noop", "Params": {"Stdout": "from a cloud\n"}},
                            }
                        ],
                    }
                )
                view = await alice.wait(job_id, timeout=30)
                assert view.state == "Completed", view
                assert {e.node_id for e in view.executions} == set(ids)
                out = b"".join([line.data async for line in alice.logs(job_id)])
                assert out.count(b"from a cloud") == 2

                # A constraint on the name as Kubernetes spells it picks that node.
                job_id = await alice.submit(
                    {
                        "Name": "on-one-host",
                        "Type": "batch",
                        "Constraints": [{"Key": "hostname", "Operator": "=", "Values": [NAMES[1]]}],
                        "Tasks": [{"Name": "main", "Engine": {"Type": "noop", "Params": {}}}],
                    }
                )
                view = await alice.wait(job_id, timeout=30)
                assert view.state == "Completed", view
                assert [e.node_id for e in view.executions] == ["ip-10-0-0-2-ec2-internal"]
        finally:
            await bus.close()
    log = (tmp_path / f"{NAMES[0]}.log").read_text()
    assert "becomes node id 'ip-10-0-0-1-ec2-internal'" in log, log
