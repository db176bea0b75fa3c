"""examples/secret-env.yaml in a real container: the task sees its secret (it prints the
length), and the value is in no stream, KV value or log line."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute.engines.docker import DockerEngine
from orchestrator.service import OrchestratorConfig
from shared.natsserver import EmbeddedNats
from tests.conftest import require
from tests.e2e.docker_stack import IMAGE, SETUP
from tests.integration.stack import FAST, Stack
from tests.integration.test_secrets import create, every_stored_message, forms

pytestmark = pytest.mark.docker

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "secret-env.yaml"
VALUE = "s3cr3t-Zq8-docker"


async def test_the_secret_example_runs_in_docker(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    probe = DockerEngine()
    try:
        require(await probe.probe(), f"needs a reachable docker daemon ({SETUP})")
        require(await probe.has_image(IMAGE), f"needs the image {IMAGE} ({SETUP})")
    finally:
        await probe.close()
    s = Stack(nats_server.url, tmp_path)
    try:
        fields = {f: getattr(FAST, f) for f in FAST.__dataclass_fields__}
        await s.start_orchestrator(
            OrchestratorConfig(**{**fields, "secrets_key": tmp_path / "secrets.key"})
        )
        await s.add_agent("node-0", engines=("docker",))
        async with await s.client() as client:
            await create(client, "db-password", VALUE)
            job_id = await client.submit(EXAMPLE.read_text())
            view = await client.wait(job_id, timeout=60)
            assert view.state == "Completed", view.state_message
            lines = [line async for line in client.logs(job_id)]
            stdout = b"".join(x.data for x in lines if x.stream == "stdout")
            assert stdout == f"DB_PASSWORD has {len(VALUE)} characters\n".encode()
        for subject, data in await every_stored_message(nats_server.url):
            for form in forms(VALUE):
                assert form not in data, f"the value is stored in {subject}"
    finally:
        for agent in s.agents.values():
            engine = agent.engines.get("docker")
            if isinstance(engine, DockerEngine):
                await engine.close()
        await s.close()
